//! What the front door's tests share: an event to send, a call with or without a bearer
//! token, the 401/403/2xx check of a guarded route.

use super::client;

/// A binary-mode event `id` of type `ty`, to be sent with [`UrlFor::url_for`].
pub fn event(id: &str, ty: &str) -> reqwest::RequestBuilder {
    client()
        .post("http://placeholder.invalid/")
        .header("ce-specversion", "1.0")
        .header("ce-id", id)
        .header("ce-source", "/test")
        .header("ce-type", ty)
        .body("{}")
}

/// Sends a request built by `build` with `token` (none for `None`).
pub async fn call(
    build: impl Fn() -> reqwest::RequestBuilder,
    token: Option<&str>,
) -> reqwest::Response {
    let mut r = build();
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    r.send().await.unwrap()
}

/// Checks that `build` gets 401 without a token, 403 naming `scope` with `wrong`, and a 2xx
/// with `right`.
pub async fn guarded(
    what: &str,
    build: impl Fn() -> reqwest::RequestBuilder,
    scope: &str,
    wrong: &str,
    right: &str,
) {
    let none = call(&build, None).await;
    assert_eq!(none.status(), 401, "{what} without a token");
    let challenge = none.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(challenge.starts_with("Bearer "), "{what}: {challenge}");
    super::problem(none).await;
    let forbidden = call(&build, Some(wrong)).await;
    assert_eq!(forbidden.status(), 403, "{what} with the wrong token");
    let p = super::problem(forbidden).await;
    assert_eq!(p["scope"], scope, "{what}: {p}");
    assert!(p["detail"].as_str().unwrap().contains(scope), "{what}: {p}");
    let ok = call(&build, Some(right)).await;
    assert!(
        ok.status().is_success(),
        "{what} with the right token: {}",
        ok.status()
    );
}

/// A request built once, sent to a URL given later.
pub trait UrlFor {
    fn url_for(self, url: &str) -> reqwest::RequestBuilder;
}

impl UrlFor for reqwest::RequestBuilder {
    /// The same request to `url` (the builder keeps headers and body).
    fn url_for(self, url: &str) -> reqwest::RequestBuilder {
        let request = self.build().unwrap();
        let mut r = client().post(url).headers(request.headers().clone());
        if let Some(body) = request.body().and_then(|b| b.as_bytes()) {
            r = r.body(body.to_vec());
        }
        r
    }
}
