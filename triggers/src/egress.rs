//! Applying an [`EgressPolicy`] to an HTTP client: a resolver that drops the addresses a
//! name resolves to that the policy refuses (so a name that points inside, or is rebound to
//! point inside, is never connected to), and a check of URLs whose host is an address.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use switchyard_core::egress::EgressPolicy;

/// A resolver that asks the system, then keeps only the addresses `policy` allows.
#[derive(Debug)]
struct Guarded {
    policy: EgressPolicy,
}

impl reqwest::dns::Resolve for Guarded {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| match policy.check(a.ip()) {
                    Ok(()) => true,
                    Err(why) => {
                        refused = Some(why);
                        false
                    }
                })
                .collect();
            if allowed.is_empty() {
                let why = refused.unwrap_or_else(|| format!("`{host}` has no address"));
                return Err(format!("`{host}`: {why}").into());
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// `builder` resolving names under `policy` (unchanged when it refuses nothing).
pub fn guard(builder: reqwest::ClientBuilder, policy: &EgressPolicy) -> reqwest::ClientBuilder {
    if !policy.deny_internal {
        return builder;
    }
    builder.dns_resolver(Arc::new(Guarded {
        policy: policy.clone(),
    }))
}

/// `Err` with why, when `url`'s host is an address `policy` refuses (a name is checked when
/// it is resolved, by [`guard`]'s resolver).
pub fn check_url(url: &str, policy: &EgressPolicy) -> Result<(), String> {
    if !policy.deny_internal {
        return Ok(());
    }
    let Ok(parsed) = url::Url::parse(url) else {
        return Err(format!("`{url}` is not a URL this server can check"));
    };
    check_parsed(&parsed, policy)
}

/// [`check_url`] for a URL already parsed.
pub fn check_parsed(parsed: &url::Url, policy: &EgressPolicy) -> Result<(), String> {
    if !policy.deny_internal {
        return Ok(());
    }
    let ip = match parsed.host() {
        Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
        Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
        _ => return Ok(()),
    };
    policy.check(ip)
}
