//! The S3Source's HTTP ways in: webhook (a sender posting S3's JSON) and SNS (signatures
//! checked, subscription confirmation with the SubscribeURL allow-list, then notifications).

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use switchyard_broker::eventtypes::EventTypePolicy;
use switchyard_broker::log::EventLog;
use switchyard_broker::problem::Problem;
use switchyard_core::config::Config;
use switchyard_core::id::SourceId;

use super::signature::{SignatureError, Verifier};
use crate::target::Target;
use crate::webhook::{Auth, check_auth};

use super::*;

/// One S3Source taking HTTP requests (webhook or SNS mode).
pub(crate) struct HttpSource {
    id: String,
    target: Target,
    auth: Auth,
    sns: Option<SnsSettings>,
    client: reqwest::Client,
    /// The same, refusing names that resolve to internal addresses.
    guarded_client: reqwest::Client,
}

struct SnsSettings {
    allowed_hosts: Vec<String>,
    topic_arns: Vec<String>,
    /// `None` when signatures are not checked (`insecureSkipSignatureVerification`).
    signatures: Option<Verifier>,
}

fn malformed_problem(m: &Malformed) -> Problem {
    Problem::new(
        StatusCode::BAD_REQUEST,
        "urn:switchyard:problem:malformed-notification",
        "malformed notification",
        m.to_string(),
    )
}

/// SubscribeURLs and SigningCertURLs a wildcard admitted may not lead to internal addresses.
pub(super) static INSIDE_REFUSED: std::sync::LazyLock<switchyard_core::egress::EgressPolicy> =
    std::sync::LazyLock::new(|| switchyard_core::egress::EgressPolicy {
        deny_internal: true,
        allow: Vec::new(),
    });

impl HttpSource {
    /// The S3Sources of `config` in an HTTP mode, by `namespace/name`.
    pub fn resolve_all(
        config: &Config,
        event_types: &Arc<EventTypePolicy>,
        client: &reqwest::Client,
    ) -> Result<Vec<(String, HttpSource)>, String> {
        let mut out = Vec::new();
        // No redirects (a redirect could lead inside unchecked) and no proxy (the resolver
        // would see only the proxy); like the subscribers' clients.
        let guarded =
            switchyard_triggers::delivery::build_client(switchyard_triggers::egress::guard(
                reqwest::Client::builder()
                    .redirect(reqwest::redirect::Policy::none())
                    .no_proxy()
                    .connect_timeout(Duration::from_secs(10)),
                &INSIDE_REFUSED,
            ))?;
        for ((ns, name), s) in &config.s3_sources {
            let id = SourceId::new(ns, name).to_string();
            let spec = &s.spec;
            let (auth, sns) = match (&spec.webhook, &spec.sns) {
                (Some(w), _) => (
                    Auth::resolve(w.auth.as_ref(), "spec.webhook.auth")
                        .map_err(|m| format!("S3Source {id}: {m}"))?,
                    None,
                ),
                (None, Some(sns)) => (
                    Auth::resolve(sns.auth.as_ref(), "spec.sns.auth")
                        .map_err(|m| format!("S3Source {id}: {m}"))?,
                    Some(SnsSettings {
                        allowed_hosts: sns.allowed_hosts(),
                        topic_arns: sns.topic_arns.clone(),
                        signatures: (!sns.insecure_skip_signature_verification).then(|| {
                            Verifier::new(sns.allowed_hosts(), client.clone(), guarded.clone())
                        }),
                    }),
                ),
                (None, None) => continue,
            };
            out.push((
                id.clone(),
                HttpSource {
                    id,
                    target: target(config, event_types, ns, name, spec),
                    auth,
                    sns,
                    client: client.clone(),
                    guarded_client: guarded.clone(),
                },
            ));
        }
        Ok(out)
    }

    fn malformed(&self, m: &Malformed) -> Problem {
        tracing::warn!(source = %self.id, error = %m, "refused a malformed notification");
        self.target.malformed("rejected");
        malformed_problem(m)
    }

    /// The bearer token and signature the source asks of callers.
    pub(crate) fn auth(&self) -> &Auth {
        &self.auth
    }

    /// Handles one request: 202 once its events are stored, 200 for a test event or a
    /// confirmed subscription, 400 for a malformed notification.
    pub async fn handle(
        &self,
        log: &Arc<dyn EventLog>,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<Response, Problem> {
        check_auth(&self.auth, headers, &body)?;
        let notification = match &self.sns {
            None => body,
            Some(sns) => match self.verified(sns, &body).await? {
                SnsMessage::Confirm { topic_arn, url } => {
                    return self.confirm(sns, &topic_arn, &url).await;
                }
                SnsMessage::Unsubscribed => return Ok(StatusCode::OK.into_response()),
                SnsMessage::Notification { topic_arn, message } => {
                    if !sns.topic_arns.is_empty() && !sns.topic_arns.contains(&topic_arn) {
                        return Err(Problem::new(
                            StatusCode::FORBIDDEN,
                            "urn:switchyard:problem:forbidden",
                            "topic not allowed",
                            format!("topic `{topic_arn}` is not in spec.sns.topicArns"),
                        ));
                    }
                    Bytes::from(message)
                }
            },
        };
        let mut events = map_notification(&notification).map_err(|m| self.malformed(&m))?;
        if events.is_empty() {
            tracing::info!(source = %self.id, "acknowledged a test event");
            return Ok(StatusCode::OK.into_response());
        }
        let encoded = self.target.prepare(&mut events)?;
        self.target.append(log, encoded).await?;
        Ok(StatusCode::ACCEPTED.into_response())
    }

    /// What the SNS message `body` asks, once its signature is checked (unless the source
    /// skips that).
    async fn verified(&self, sns: &SnsSettings, body: &[u8]) -> Result<SnsMessage, Problem> {
        let value = sns_json(body).map_err(|m| self.malformed(&m))?;
        if let Some(verifier) = &sns.signatures
            && let Err(e) = verifier.verify(&value).await
        {
            tracing::warn!(source = %self.id, error = %e, "refused an SNS message");
            return Err(match e {
                SignatureError::Malformed(m) => self.malformed(&Malformed(m)),
                SignatureError::Refused(m) => Problem::new(
                    StatusCode::FORBIDDEN,
                    "urn:switchyard:problem:bad-signature",
                    "signature refused",
                    m,
                ),
                SignatureError::Unavailable(m) => Problem::new(
                    StatusCode::BAD_GATEWAY,
                    "urn:switchyard:problem:signing-certificate-unavailable",
                    "signing certificate unavailable",
                    m,
                ),
            });
        }
        parse_sns_value(&value).map_err(|m| self.malformed(&m))
    }

    async fn confirm(
        &self,
        sns: &SnsSettings,
        topic_arn: &str,
        url: &str,
    ) -> Result<Response, Problem> {
        let forbidden = |detail: String| {
            tracing::warn!(source = %self.id, %detail, "refused an SNS subscription");
            Problem::new(
                StatusCode::FORBIDDEN,
                "urn:switchyard:problem:forbidden",
                "subscription refused",
                detail,
            )
        };
        if !sns.topic_arns.is_empty() && !sns.topic_arns.iter().any(|t| t == topic_arn) {
            return Err(forbidden(format!(
                "topic `{topic_arn}` is not in spec.sns.topicArns"
            )));
        }
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| self.malformed(&Malformed(format!("SubscribeURL `{url}`: {e}"))))?;
        let host = parsed.host_str().unwrap_or("");
        let Some(wildcard) = host_match(host, &sns.allowed_hosts) else {
            return Err(forbidden(format!(
                "SubscribeURL host `{host}` is not in spec.sns.allowedHosts ({})",
                sns.allowed_hosts.join(", ")
            )));
        };
        // A host only a wildcard admits is anyone's to point somewhere: it must not lead
        // inside (a host listed exactly is the operator's choice, wherever it is).
        let client = if wildcard {
            if let Err(why) = switchyard_triggers::egress::check_parsed(&parsed, &INSIDE_REFUSED) {
                return Err(forbidden(format!("SubscribeURL `{url}`: {why}")));
            }
            &self.guarded_client
        } else {
            &self.client
        };
        match client
            .get(parsed)
            .timeout(Duration::from_secs(10))
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => {
                tracing::info!(source = %self.id, topic = %topic_arn, "confirmed the SNS subscription");
                Ok(StatusCode::OK.into_response())
            }
            Ok(r) => Err(Problem::new(
                StatusCode::BAD_GATEWAY,
                "urn:switchyard:problem:confirmation-failed",
                "subscription confirmation failed",
                format!("SubscribeURL answered {}", r.status()),
            )),
            Err(e) => Err(Problem::new(
                StatusCode::BAD_GATEWAY,
                "urn:switchyard:problem:confirmation-failed",
                "subscription confirmation failed",
                format!("SubscribeURL could not be fetched: {e}"),
            )),
        }
    }
}
