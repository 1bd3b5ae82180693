//! The HTTP client a trigger delivers with: its settings (no redirects, no retries of its
//! own, no proxies, the connect timeout, the egress policy) and its trust roots (the system's,
//! and a destination's `CACerts`); the text of a client error's causes.

use std::time::Duration;

use switchyard_core::egress::EgressPolicy;

/// The texts of `e`'s sources, outermost first, joined by `: ` (reqwest's own text is only
/// its kind, such as "error sending request").
pub(crate) fn causes(e: &dyn std::error::Error) -> String {
    let mut chain = Vec::new();
    let mut source = e.source();
    while let Some(s) = source {
        chain.push(s.to_string());
        source = s.source();
    }
    chain.join(": ")
}

/// Whether this system's trust roots load (checked once per process), and why not. A slim
/// container image without `ca-certificates` has none.
pub fn system_trust_roots() -> Result<(), String> {
    static ROOTS: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    ROOTS
        .get_or_init(|| {
            reqwest::Client::builder()
                .build()
                .map(|_| ())
                .map_err(|e| format!("{e}: {}", causes(&e)))
        })
        .clone()
}

/// Builds `builder` trusting the system's roots, or, on a system that has none, trusting none:
/// plain-HTTP destinations work either way. (Where an https destination needs the roots, the
/// configuration is refused at start instead; see [`needs_trust_roots`].)
pub fn build_client(builder: reqwest::ClientBuilder) -> Result<reqwest::Client, String> {
    let builder = match system_trust_roots() {
        Ok(()) => builder,
        Err(_) => builder.tls_certs_only([]),
    };
    builder.build().map_err(|e| format!("{e}: {}", causes(&e)))
}

/// `Err` with a one-line reason when `url` is https and this system has no trust roots to
/// verify it with; `what` names the field or resource that gave it.
pub fn needs_trust_roots(what: &str, url: &str) -> Result<(), String> {
    if !url.to_ascii_lowercase().starts_with("https://") {
        return Ok(());
    }
    system_trust_roots().map_err(|why| {
        format!(
            "{what} `{url}` is https, but this system has no CA certificates to verify it with \
             (install ca-certificates, or mount a bundle and set SSL_CERT_FILE): {why}"
        )
    })
}

/// The HTTP client of one subscriber: its own connection pool, no redirects, no retries of
/// its own (an attempt that fails is the DeliverySpec's to retry, counted and backed off; a
/// retry layer would also copy every request in case), no proxies, a short connect timeout;
/// trusting, besides the system's roots, the PEM CA certificates in `ca_certs` (Knative's
/// `CACerts` of the trigger's destinations).
pub fn client(
    ca_certs: &[&str],
    egress: &EgressPolicy,
    connect_timeout: Duration,
) -> Result<reqwest::Client, String> {
    let builder = crate::egress::guard(
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .retry(reqwest::retry::never().max_retries_per_request(0))
            .connect_timeout(connect_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .no_proxy(),
        egress,
    );
    if ca_certs.is_empty() {
        return build_client(builder);
    }
    let mut certs = Vec::new();
    for pem in ca_certs {
        certs.extend(
            reqwest::Certificate::from_pem_bundle(pem.as_bytes())
                .map_err(|e| format!("CACerts holds no usable PEM certificate: {e}"))?,
        );
    }
    let builder = match system_trust_roots() {
        Ok(()) => builder.tls_certs_merge(certs),
        Err(_) => builder.tls_certs_only(certs),
    };
    builder.build().map_err(|e| format!("{e}: {}", causes(&e)))
}
