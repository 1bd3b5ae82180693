//! JWTs from TokenIssuers: the issuer's keys (a JWK Set from a file, or from a URL fetched
//! again when stale or when a token names a key not in it), the checks (signature with
//! RS256/384/512, PS256, ES256/384 or EdDSA; `iss`; `aud`; `exp` and `nbf` with leeway;
//! `sub`), and a cache of verified tokens so a client that sends the same token with every
//! request pays for its signature once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use switchyard_core::auth::{
    DEFAULT_JWKS_REFRESH_SECONDS, DEFAULT_LEEWAY_SECONDS, DEFAULT_SCOPES_CLAIM, Grant,
    TokenIssuerSpec,
};

use super::Principal;

/// The algorithms accepted: asymmetric only (never `none` or a shared-secret HMAC).
const ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];
/// The soonest a JWK Set URL is fetched again after a fetch, whatever tokens ask for.
const MIN_REFETCH: Duration = Duration::from_secs(10);
/// How long a JWK Set fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Verified tokens kept; the cache is emptied when it is full.
const CACHE_ENTRIES: usize = 10_000;

enum Keys {
    File,
    Url {
        url: String,
        refresh: Duration,
        client: reqwest::Client,
        /// When the set was last fetched (successfully or not).
        fetched: tokio::sync::Mutex<Option<Instant>>,
        /// When the set held now was fetched.
        current_since: Mutex<Option<Instant>>,
    },
}

/// The JWK Sets fetched from URLs, with when, kept across reloads (which build every
/// issuer anew) so that an issuer unreachable at a reload does not lock its callers out.
static FETCHED: std::sync::LazyLock<Mutex<Fetched>> =
    std::sync::LazyLock::new(|| Mutex::new(HashMap::new()));

/// JWK Sets by URL, with when each was fetched.
type Fetched = HashMap<String, (Arc<JwkSet>, Instant)>;

/// Verified tokens by SHA-256: the principal and the `exp` it holds until.
type Verified = HashMap<[u8; 32], (Arc<Principal>, u64)>;

/// One TokenIssuer, ready to check tokens.
pub(crate) struct Issuer {
    issuer: String,
    audiences: Vec<String>,
    scopes_claim: String,
    leeway: Duration,
    set: RwLock<Arc<JwkSet>>,
    keys: Keys,
    /// Verified tokens by SHA-256: the principal and the `exp` it holds until.
    cache: Mutex<Verified>,
}

impl Issuer {
    pub(crate) fn new(spec: &TokenIssuerSpec) -> Result<Issuer, String> {
        // The one crypto backend linked; installing it twice is harmless.
        let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
        let (set, keys) = match (&spec.jwks.file, &spec.jwks.url) {
            (Some(file), _) => {
                let text = std::fs::read_to_string(file)
                    .map_err(|e| format!("cannot read spec.jwks.file {file}: {e}"))?;
                let set: JwkSet = serde_json::from_str(&text)
                    .map_err(|e| format!("spec.jwks.file {file} is not a JWK Set: {e}"))?;
                (set, Keys::File)
            }
            (None, Some(url)) => {
                // A reload builds the issuer anew; the keys fetched before stay in use.
                let (set, since) = FETCHED
                    .lock()
                    .ok()
                    .and_then(|f| f.get(url).cloned())
                    .map_or((JwkSet { keys: Vec::new() }, None), |(set, at)| {
                        ((*set).clone(), Some(at))
                    });
                let keys = Keys::Url {
                    url: url.clone(),
                    refresh: spec
                        .jwks
                        .refresh_interval
                        .map_or(Duration::from_secs(DEFAULT_JWKS_REFRESH_SECONDS), |d| d.0),
                    client: reqwest::Client::builder()
                        .timeout(FETCH_TIMEOUT)
                        .build()
                        .map_err(|e| e.to_string())?,
                    fetched: tokio::sync::Mutex::new(None),
                    current_since: Mutex::new(since),
                };
                (set, keys)
            }
            (None, None) => return Err("spec.jwks names no keys".to_owned()),
        };
        Ok(Issuer {
            issuer: spec.issuer.clone(),
            audiences: spec.audiences.clone(),
            scopes_claim: spec
                .scopes_claim
                .clone()
                .unwrap_or_else(|| DEFAULT_SCOPES_CLAIM.to_owned()),
            leeway: spec
                .leeway
                .map_or(Duration::from_secs(DEFAULT_LEEWAY_SECONDS), |d| d.0),
            set: RwLock::new(Arc::new(set)),
            keys,
            cache: Mutex::new(HashMap::new()),
        })
    }

    fn set(&self) -> Arc<JwkSet> {
        self.set
            .read()
            .map(|s| Arc::clone(&s))
            .unwrap_or_else(|_| Arc::new(JwkSet { keys: Vec::new() }))
    }

    /// Fetches the JWK Set again when it is stale, or when `missing` (a key id not in it) and
    /// the last fetch is long enough ago.
    async fn refresh(&self, missing: bool) {
        let Keys::Url {
            url,
            refresh,
            client,
            fetched,
            current_since,
        } = &self.keys
        else {
            return;
        };
        let stale = current_since
            .lock()
            .map(|s| s.is_none_or(|t| t.elapsed() >= *refresh))
            .unwrap_or(true);
        if !stale && !missing {
            return;
        }
        // A stale set is still good: when another request is fetching, go on with it. A
        // missing key is worth waiting for.
        let mut last = if missing {
            fetched.lock().await
        } else {
            match fetched.try_lock() {
                Ok(last) => last,
                Err(_) => return,
            }
        };
        if last.is_some_and(|t| t.elapsed() < MIN_REFETCH) {
            return;
        }
        *last = Some(Instant::now());
        let got = async {
            let response = client.get(url).send().await.map_err(|e| e.to_string())?;
            if !response.status().is_success() {
                return Err(format!("answered {}", response.status()));
            }
            let body = response.bytes().await.map_err(|e| e.to_string())?;
            serde_json::from_slice::<JwkSet>(&body).map_err(|e| format!("not a JWK Set: {e}"))
        }
        .await;
        match got {
            Ok(set) => {
                tracing::info!(%url, keys = set.keys.len(), "fetched the JWK Set of a TokenIssuer");
                let set = Arc::new(set);
                if let Ok(mut f) = FETCHED.lock() {
                    f.insert(url.clone(), (Arc::clone(&set), Instant::now()));
                }
                if let Ok(mut s) = self.set.write() {
                    *s = set;
                }
                if let Ok(mut s) = current_since.lock() {
                    *s = Some(Instant::now());
                }
            }
            Err(e) => {
                tracing::warn!(%url, error = %e, "cannot fetch the JWK Set of a TokenIssuer; keeping the keys held");
            }
        }
    }

    fn cached(&self, digest: &[u8; 32], now: u64) -> Option<Arc<Principal>> {
        let cache = self.cache.lock().ok()?;
        let (p, exp) = cache.get(digest)?;
        (now <= exp.saturating_add(self.leeway.as_secs())).then(|| Arc::clone(p))
    }

    fn remember(&self, digest: [u8; 32], principal: &Arc<Principal>, exp: u64) {
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHE_ENTRIES {
                cache.clear();
            }
            cache.insert(digest, (Arc::clone(principal), exp));
        }
    }

    async fn verify(
        &self,
        token: &str,
        header: &jsonwebtoken::Header,
    ) -> Result<Principal, String> {
        let find = |set: &JwkSet| -> Vec<jsonwebtoken::jwk::Jwk> {
            match &header.kid {
                Some(kid) => set.find(kid).cloned().into_iter().collect(),
                None => set.keys.clone(),
            }
        };
        self.refresh(false).await;
        let mut candidates = find(&self.set());
        if candidates.is_empty() {
            self.refresh(true).await;
            candidates = find(&self.set());
        }
        if candidates.is_empty() {
            return Err(match &header.kid {
                Some(kid) => format!("issuer {} has no key `{kid}`", self.issuer),
                None => format!("issuer {} has no keys", self.issuer),
            });
        }
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&self.audiences);
        validation.leeway = self.leeway.as_secs();
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let mut last = String::from("no key fits");
        for jwk in candidates {
            let key = match DecodingKey::from_jwk(&jwk) {
                Ok(k) => k,
                Err(e) => {
                    last = format!("key unusable: {e}");
                    continue;
                }
            };
            match jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation) {
                Ok(data) => return self.principal(&data.claims),
                Err(e) => last = describe(&e),
            }
        }
        Err(last)
    }

    fn principal(&self, claims: &serde_json::Value) -> Result<Principal, String> {
        let subject = claims
            .get("sub")
            .and_then(|s| s.as_str())
            .filter(|s| !s.is_empty())
            .ok_or("the token has no `sub`")?;
        let scopes: Vec<String> = match claims.get(&self.scopes_claim) {
            Some(serde_json::Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        };
        Ok(Principal {
            subject: subject.to_owned(),
            grants: scopes.iter().filter_map(|s| Grant::parse(s)).collect(),
            via: "jwt",
        })
    }
}

fn describe(e: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::ExpiredSignature => "the token has expired".to_owned(),
        K::ImmatureSignature => "the token is not valid yet (`nbf`)".to_owned(),
        K::InvalidAudience => "the token is for another audience".to_owned(),
        K::InvalidIssuer => "the token is from another issuer".to_owned(),
        K::InvalidSignature => "the signature does not verify".to_owned(),
        K::MissingRequiredClaim(c) => format!("the token has no `{c}`"),
        _ => format!("the token does not verify: {e}"),
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The `iss` and `exp` claims of `token`, read without checking anything: which issuer to
/// ask, and how long a verified token may be cached.
fn peek(token: &str) -> Result<(String, u64), String> {
    let payload = token.split('.').nth(1).ok_or("not a JWT")?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| "not a JWT: the payload is not base64url")?;
    let claims: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|_| "not a JWT: the payload is not JSON")?;
    let iss = claims
        .get("iss")
        .and_then(|v| v.as_str())
        .ok_or("the token has no `iss`")?;
    let exp = claims
        .get("exp")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0);
    Ok((iss.to_owned(), exp))
}

/// Verifies `token` (whose SHA-256 is `digest`) against the issuer it names.
pub(crate) async fn verify(
    issuers: &[Issuer],
    token: &str,
    digest: &[u8; 32],
) -> Result<Arc<Principal>, String> {
    let (iss, exp) = peek(token)?;
    let issuer = issuers
        .iter()
        .find(|i| i.issuer == iss)
        .ok_or_else(|| format!("no TokenIssuer is configured for issuer `{iss}`"))?;
    if let Some(p) = issuer.cached(digest, now_secs()) {
        return Ok(p);
    }
    let header = jsonwebtoken::decode_header(token).map_err(|e| describe(&e))?;
    if !ALGORITHMS.contains(&header.alg) {
        return Err(format!(
            "algorithm {:?} is not accepted (RS256/384/512, PS256, ES256/384, EdDSA are)",
            header.alg
        ));
    }
    let principal = Arc::new(issuer.verify(token, &header).await?);
    issuer.remember(*digest, &principal, exp);
    Ok(principal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peeking_reads_iss_and_exp_without_verifying() {
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let token = format!(
            "{}.{}.sig",
            b64(r#"{"alg":"ES256"}"#),
            b64(r#"{"iss":"https://issuer.test","exp":42}"#)
        );
        assert_eq!(peek(&token), Ok(("https://issuer.test".to_owned(), 42)));
        assert!(peek("a.b.c").is_err());
        let no_iss = format!("{}.{}.sig", b64("{}"), b64(r#"{"sub":"x"}"#));
        assert_eq!(peek(&no_iss), Err("the token has no `iss`".to_owned()));
    }
}
