//! SNS message signatures: every message SNS posts (confirmations and notifications alike) is
//! signed with the key of a certificate at its `SigningCertURL`. A message is admitted only when
//! that URL is https on an allowed SNS host, and the signature over the message's fields
//! (AWS's "string to sign") verifies with the certificate's RSA key: SHA1 for
//! `SignatureVersion` 1 (SNS's default), SHA256 for 2. Certificates are cached by URL.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::signature::{
    RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY, RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey,
    VerificationAlgorithm,
};
use base64::Engine as _;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;

/// Certificates kept at most; SNS signs with one per region, rotated every few months.
const MAX_CACHED: usize = 64;
/// A signing certificate larger than this is refused unread.
const MAX_CERT_BYTES: usize = 64 * 1024;

/// Why a message is not admitted.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SignatureError {
    /// The message lacks what a signed message has, or has it in a form SNS never sends.
    #[error("{0}")]
    Malformed(String),
    /// The certificate URL or the signature is not SNS's.
    #[error("{0}")]
    Refused(String),
    /// The certificate could not be fetched (worth a retry: SNS retries deliveries).
    #[error("{0}")]
    Unavailable(String),
}

/// The signed fields of a message, in the order AWS signs them, for its `Type`.
fn signed_fields(ty: &str) -> Option<&'static [&'static str]> {
    match ty {
        "Notification" => Some(&[
            "Message",
            "MessageId",
            "Subject",
            "Timestamp",
            "TopicArn",
            "Type",
        ]),
        "SubscriptionConfirmation" | "UnsubscribeConfirmation" => Some(&[
            "Message",
            "MessageId",
            "SubscribeURL",
            "Timestamp",
            "Token",
            "TopicArn",
            "Type",
        ]),
        _ => None,
    }
}

/// AWS's string to sign: `name\nvalue\n` for each signed field present (`Subject` may be
/// absent; the others may not).
pub(crate) fn string_to_sign(message: &serde_json::Value) -> Result<String, SignatureError> {
    let ty = message
        .get("Type")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("");
    let fields = signed_fields(ty)
        .ok_or_else(|| SignatureError::Malformed(format!("unknown SNS message type `{ty}`")))?;
    let mut out = String::new();
    for name in fields {
        match message.get(*name).and_then(serde_json::Value::as_str) {
            Some(value) => {
                out.push_str(name);
                out.push('\n');
                out.push_str(value);
                out.push('\n');
            }
            None if *name == "Subject" => {}
            None => {
                return Err(SignatureError::Malformed(format!(
                    "the SNS message has no `{name}`"
                )));
            }
        }
    }
    Ok(out)
}

/// Verifies SNS signatures, fetching and caching the signing certificates.
pub(crate) struct Verifier {
    /// Hosts a `SigningCertURL` may name (the source's `allowedHosts`).
    allowed_hosts: Vec<String>,
    /// The client for hosts listed exactly, and the one refusing internal addresses for hosts
    /// a wildcard admitted.
    client: reqwest::Client,
    guarded_client: reqwest::Client,
    /// Public keys (DER SubjectPublicKeyInfo) by certificate URL.
    keys: Mutex<HashMap<String, Arc<Vec<u8>>>>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("allowed_hosts", &self.allowed_hosts)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    pub(crate) fn new(
        allowed_hosts: Vec<String>,
        client: reqwest::Client,
        guarded_client: reqwest::Client,
    ) -> Self {
        Verifier {
            allowed_hosts,
            client,
            guarded_client,
            keys: Mutex::new(HashMap::new()),
        }
    }

    /// `Ok` when `message` is signed by SNS. Nothing is fetched for a message that is
    /// malformed.
    pub(crate) async fn verify(&self, message: &serde_json::Value) -> Result<(), SignatureError> {
        let url = field(message, "SigningCertURL")?;
        let signed = Signed::of(message)?;
        let key = self.key(url).await?;
        signed.check(&key)
    }

    /// The public key of the certificate at `url`, fetched once.
    async fn key(&self, url: &str) -> Result<Arc<Vec<u8>>, SignatureError> {
        if let Some(k) = self.cached(url) {
            return Ok(k);
        }
        let refused =
            |why: String| SignatureError::Refused(format!("SigningCertURL `{url}`: {why}"));
        let parsed = reqwest::Url::parse(url).map_err(|e| refused(e.to_string()))?;
        if parsed.scheme() != "https" {
            return Err(refused("is not https".to_owned()));
        }
        let host = parsed.host_str().unwrap_or("");
        let Some(wildcard) = super::host_match(host, &self.allowed_hosts) else {
            return Err(refused(format!(
                "host `{host}` is not in spec.sns.allowedHosts ({})",
                self.allowed_hosts.join(", ")
            )));
        };
        if !parsed.path().ends_with(".pem") {
            return Err(refused("is not a .pem certificate".to_owned()));
        }
        let client = if wildcard {
            switchyard_triggers::egress::check_parsed(&parsed, &super::http::INSIDE_REFUSED)
                .map_err(|why| refused(why.to_string()))?;
            &self.guarded_client
        } else {
            &self.client
        };
        let unavailable =
            |why: String| SignatureError::Unavailable(format!("SigningCertURL `{url}`: {why}"));
        let mut response = client
            .get(parsed)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        if !response.status().is_success() {
            return Err(unavailable(format!("answered {}", response.status())));
        }
        let mut pem = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| unavailable(e.to_string()))?
        {
            if pem.len() + chunk.len() > MAX_CERT_BYTES {
                return Err(refused(format!("is larger than {MAX_CERT_BYTES} bytes")));
            }
            pem.extend_from_slice(&chunk);
        }
        let key = Arc::new(public_key(&pem).map_err(refused)?);
        let mut keys = self
            .keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if keys.len() >= MAX_CACHED {
            keys.clear();
        }
        keys.insert(url.to_owned(), Arc::clone(&key));
        Ok(key)
    }

    fn cached(&self, url: &str) -> Option<Arc<Vec<u8>>> {
        self.keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(url)
            .cloned()
    }
}

/// A message's signature, and what it signs.
struct Signed {
    algorithm: &'static dyn VerificationAlgorithm,
    signature: Vec<u8>,
    string_to_sign: String,
}

impl Signed {
    fn of(message: &serde_json::Value) -> Result<Signed, SignatureError> {
        let algorithm: &'static dyn VerificationAlgorithm =
            match field(message, "SignatureVersion")? {
                "1" => &RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
                "2" => &RSA_PKCS1_2048_8192_SHA256,
                other => {
                    return Err(SignatureError::Malformed(format!(
                        "SignatureVersion `{other}` is not 1 or 2"
                    )));
                }
            };
        let signature = base64::engine::general_purpose::STANDARD
            .decode(field(message, "Signature")?)
            .map_err(|e| SignatureError::Malformed(format!("Signature is not base64: {e}")))?;
        Ok(Signed {
            algorithm,
            signature,
            string_to_sign: string_to_sign(message)?,
        })
    }

    /// `Ok` when the signature verifies with `key` (a DER SubjectPublicKeyInfo).
    fn check(&self, key: &[u8]) -> Result<(), SignatureError> {
        UnparsedPublicKey::new(self.algorithm, key)
            .verify(self.string_to_sign.as_bytes(), &self.signature)
            .map_err(|_| {
                SignatureError::Refused(
                    "the signature does not match the message and its SigningCertURL's certificate"
                        .to_owned(),
                )
            })
    }
}

fn field<'a>(message: &'a serde_json::Value, name: &str) -> Result<&'a str, SignatureError> {
    message
        .get(name)
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| SignatureError::Malformed(format!("the SNS message has no `{name}`")))
}

/// The DER SubjectPublicKeyInfo of the first certificate in `pem`.
fn public_key(pem: &[u8]) -> Result<Vec<u8>, String> {
    let der = CertificateDer::from_pem_slice(pem)
        .map_err(|e| format!("holds no PEM certificate: {e:?}"))?;
    let cert = webpki::EndEntityCert::try_from(&der)
        .map_err(|e| format!("holds no usable certificate: {e}"))?;
    Ok(cert.subject_public_key_info().as_ref().to_vec())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_string_to_sign_lists_the_signed_fields_in_order() {
        let notification = serde_json::json!({
            "Type": "Notification", "MessageId": "m", "TopicArn": "t", "Message": "hi",
            "Timestamp": "2026-12-04T00:00:00.000Z", "SignatureVersion": "1", "Extra": "x"
        });
        assert_eq!(
            string_to_sign(&notification).unwrap(),
            "Message\nhi\nMessageId\nm\nTimestamp\n2026-12-04T00:00:00.000Z\nTopicArn\nt\nType\nNotification\n"
        );
        let mut with_subject = notification.clone();
        with_subject["Subject"] = "s".into();
        assert!(
            string_to_sign(&with_subject)
                .unwrap()
                .contains("MessageId\nm\nSubject\ns\nTimestamp")
        );
        let confirmation = serde_json::json!({
            "Type": "SubscriptionConfirmation", "MessageId": "m", "TopicArn": "t",
            "Message": "hi", "Timestamp": "ts", "SubscribeURL": "u"
        });
        assert!(matches!(
            string_to_sign(&confirmation),
            Err(SignatureError::Malformed(m)) if m.contains("`Token`")
        ));
    }

    fn fixture(name: &str) -> serde_json::Value {
        let path = format!("{}/tests/fixtures/s3/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    #[test]
    fn signatures_of_both_versions_verify_and_a_changed_message_does_not() {
        let pem = include_bytes!("../../tests/fixtures/s3/sns_signing_cert.pem");
        let key = public_key(pem).unwrap();
        for name in [
            "sns_notification_signed_v1.json",
            "sns_notification_signed_v2.json",
        ] {
            let message = fixture(name);
            Signed::of(&message).unwrap().check(&key).unwrap();
            let mut changed = message.clone();
            changed["Message"] = "{\"Records\":[]}".into();
            assert!(matches!(
                Signed::of(&changed).unwrap().check(&key),
                Err(SignatureError::Refused(_))
            ));
            // Version 1 is SHA1, 2 is SHA256: a signature read as the other version fails.
            let mut other = message.clone();
            let swapped = if message["SignatureVersion"] == "1" {
                "2"
            } else {
                "1"
            };
            other["SignatureVersion"] = swapped.into();
            assert!(Signed::of(&other).unwrap().check(&key).is_err());
        }
        // The recorded AWS example is not signed by this key.
        let recorded = fixture("sns_notification.json");
        assert!(Signed::of(&recorded).unwrap().check(&key).is_err());
        let mut unknown = recorded;
        unknown["SignatureVersion"] = "3".into();
        assert!(matches!(
            Signed::of(&unknown),
            Err(SignatureError::Malformed(m)) if m.contains("`3`")
        ));
        assert!(public_key(b"not a certificate").is_err());
    }
}
