//! Where a redrive may send (spec/management-api.md, "`POST …/deadletters/redrive`"): a
//! `uri` must be where the dead letter's trigger delivers, or under a prefix
//! `serve --redrive-allow-uri` gives, so a redrive cannot send stored events to an address
//! of the caller's choosing.

use switchyard_broker::problem::Problem;

use super::bad_request;

/// Parses a `--redrive-allow-uri` prefix: an http(s) URL without user or password.
pub fn redrive_prefix(text: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(text).map_err(|e| format!("`{text}` is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https")
        || url.host_str().is_none_or(str::is_empty)
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return Err(format!(
            "`{text}` is not an http(s) URL with a host (and no user or password)"
        ));
    }
    Ok(url)
}

/// Whether `uri` is under `prefix`: the same scheme, host and port, and a path that is the
/// prefix's or below it (at a `/`), after both were normalised by parsing.
fn under(uri: &url::Url, prefix: &url::Url) -> bool {
    let (path, base) = (uri.path(), prefix.path());
    uri.scheme() == prefix.scheme()
        && uri.host_str() == prefix.host_str()
        && uri.port_or_known_default() == prefix.port_or_known_default()
        && (path == base
            || path
                .strip_prefix(base)
                .is_some_and(|rest| base.ends_with('/') || rest.starts_with('/')))
}

/// A redrive request's `uri`, checked: an http(s) URL without user or password.
pub(crate) fn redrive_uri(uri: Option<&str>) -> Result<Option<url::Url>, Problem> {
    uri.map(|uri| {
        switchyard_core::resources::validate_http_url("uri", uri)
            .map_err(|e| bad_request(e.to_string()))?;
        url::Url::parse(uri)
            .ok()
            .filter(|u| u.username().is_empty() && u.password().is_none())
            .ok_or_else(|| {
                bad_request(format!(
                    "`{uri}` is not a URL a redrive can send to (no user or password in it)"
                ))
            })
    })
    .transpose()
}

/// Whether a redrive may send trigger `trigger`'s dead letter to `uri`: where the trigger
/// delivers (`destinations`), or under an allowed prefix; 403 otherwise.
pub(crate) fn may_send<'a>(
    uri: &url::Url,
    trigger: &str,
    mut destinations: impl Iterator<Item = &'a str>,
    allow: &[url::Url],
) -> Result<(), Problem> {
    if destinations.any(|u| url::Url::parse(u).is_ok_and(|u| u == *uri))
        || allow.iter().any(|p| under(uri, p))
    {
        return Ok(());
    }
    Err(Problem::forbidden(format!(
        "a redrive may send only where the dead letter's trigger `{trigger}` delivers (its subscriber or dead-letter sink) or under a URL `serve --redrive-allow-uri` gives; `{uri}` is neither"
    )))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_redrive_prefix_holds_for_its_own_origin_and_paths_below_it() {
        let prefix = redrive_prefix("http://hooks.example/replay").unwrap();
        let ok = |u: &str| under(&url::Url::parse(u).unwrap(), &prefix);
        assert!(ok("http://hooks.example/replay"));
        assert!(ok("http://hooks.example/replay/a"));
        assert!(ok("http://hooks.example:80/replay/a"));
        assert!(!ok("http://hooks.example/replay-x"));
        assert!(!ok("http://hooks.example/replay/../admin"));
        assert!(!ok("http://hooks.example.evil/replay"));
        assert!(!ok("https://hooks.example/replay"));
        assert!(!ok("http://hooks.example:8080/replay"));
        assert!(!ok("http://x@169.254.169.254/replay"));
        let root = redrive_prefix("http://127.0.0.1:9001/").unwrap();
        assert!(under(
            &url::Url::parse("http://127.0.0.1:9001/any").unwrap(),
            &root
        ));
        assert!(!under(
            &url::Url::parse("http://127.0.0.1:80@169.254.169.254/").unwrap(),
            &root
        ));
        for bad in ["", "http://", "ftp://h/", "http://u:p@h/", "127.0.0.1:"] {
            assert!(redrive_prefix(bad).is_err(), "{bad}");
        }
    }
}
