//! Source resources: the WebhookSource, PingSource and S3Source kinds that turn the outside
//! world into CloudEvents, and what they share (`sink`, `ceOverrides`, secrets).
//!
//! A source's `sink` is a `ref` to a Broker of the configuration, or a `uri`; for a `uri` the
//! configuration adds a Broker and a Trigger of the source's own (see
//! [`crate::config::Config::source_broker`]), so events are stored before they are accepted
//! and reach the URI with a trigger's retry rules.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::resources::{Destination, Duration, FieldError, ObjectMeta};
use crate::schedule::Schedule;

/// `apiVersion` of Knative's source kinds (PingSource), which load unchanged.
pub const KNATIVE_SOURCES_V1: &str = "sources.knative.dev/v1";
/// `apiVersion` of Switchyard's own source kinds (those Knative lacks).
pub const SWITCHYARD_SOURCES_V1: &str = "sources.switchyard.dev/v1";

/// A secret value: given inline, named by an environment variable, or read from a secrets
/// directory laid out as Kubernetes mounts Secrets (Knative's `secretKeyRef`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SecretValue {
    /// The value itself (avoid: it ends up in config files).
    #[serde(default, skip_serializing)]
    pub value: Option<String>,
    /// The environment variable holding the value, read when the server starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_env: Option<String>,
    /// A key of a Kubernetes Secret: the file `{secrets dir}/{name}/{key}`, read when the
    /// server starts ([`secrets_dir`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeyRef>,
}

/// Knative's (Kubernetes') reference to one key of a Secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// The Secret's name: a folder of the secrets directory.
    pub name: String,
    /// The key: a file in that folder.
    pub key: String,
    /// Kubernetes' `optional`: accepted; a missing secret is an error all the same.
    #[serde(default, skip_serializing)]
    pub optional: Option<bool>,
}

/// Where `secretKeyRef`s are read: `SWITCHYARD_SECRETS_DIR`, or this.
pub const DEFAULT_SECRETS_DIR: &str = "/etc/switchyard/secrets";

/// The secrets directory: one folder per Secret, one file per key, as a Kubernetes Secret
/// volume mounted at `{dir}/{name}` lays them out. `SWITCHYARD_SECRETS_DIR`, or
/// [`DEFAULT_SECRETS_DIR`].
pub fn secrets_dir() -> std::path::PathBuf {
    std::env::var_os("SWITCHYARD_SECRETS_DIR")
        .map_or_else(|| DEFAULT_SECRETS_DIR.into(), std::path::PathBuf::from)
}

impl SecretValue {
    pub(crate) fn validate(&self, field: &str) -> Result<(), FieldError> {
        let given = [
            self.value.is_some(),
            self.from_env.is_some(),
            self.secret_key_ref.is_some(),
        ];
        let empty = self.value.as_deref() == Some("") || self.from_env.as_deref() == Some("");
        if given.iter().filter(|g| **g).count() != 1 || empty {
            return Err(FieldError::new(
                field,
                "give exactly one of `value`, `fromEnv` or `secretKeyRef`, not empty",
            ));
        }
        if let Some(r) = &self.secret_key_ref {
            crate::resources::dns_subdomain(&format!("{field}.secretKeyRef.name"), &r.name)?;
            let key_ok = !r.key.is_empty()
                && r.key != "."
                && r.key != ".."
                && r.key.len() <= 253
                && r.key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
            if !key_ok {
                return Err(FieldError::new(
                    format!("{field}.secretKeyRef.key"),
                    format!(
                        "`{}` is not a Secret key: use letters, digits, `-`, `_` and `.`",
                        r.key
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The secret, reading the environment or the secrets directory when it is there.
    pub fn resolve(&self) -> Result<String, String> {
        match (&self.value, &self.from_env, &self.secret_key_ref) {
            (Some(v), _, _) => Ok(v.clone()),
            (None, Some(var), _) => std::env::var(var)
                .map_err(|_| format!("the environment variable `{var}` is not set (or not UTF-8)")),
            (None, None, Some(r)) => {
                let path = secrets_dir().join(&r.name).join(&r.key);
                std::fs::read_to_string(&path).map_err(|e| {
                    format!(
                        "cannot read key `{}` of Secret `{}` at {}: {e} (SWITCHYARD_SECRETS_DIR holds a folder per Secret, a file per key)",
                        r.key,
                        r.name,
                        path.display()
                    )
                })
            }
            (None, None, None) => Err("no secret given".to_owned()),
        }
    }
}

/// HMAC-SHA256 signature check of a webhook body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HmacAuth {
    /// The header carrying the signature (default `X-Hub-Signature-256`, GitHub's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// Text before the hex digest in the header (default `sha256=`; `""` for none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// The shared secret.
    pub secret: SecretValue,
}

/// How a webhook source authenticates its callers. Both checks apply when both are given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WebhookAuth {
    /// `Authorization: Bearer <token>` must carry this token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token: Option<SecretValue>,
    /// The body must carry a valid HMAC-SHA256 signature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hmac: Option<HmacAuth>,
}

/// Where a webhook source takes the `subject` of events it builds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SubjectFrom {
    /// A request header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// A JSON pointer into a JSON body (e.g. `/repository/full_name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_pointer: Option<String>,
}

/// Knative's `ceOverrides`: extensions set on every event a source emits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CeOverrides {
    /// Extension name → value.
    #[serde(default)]
    pub extensions: BTreeMap<String, String>,
}

/// `spec` of a WebhookSource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WebhookSourceSpec {
    /// Where events go: a `ref` to a Broker, or a `uri`.
    pub sink: Destination,
    /// Extensions added to every event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ce_overrides: Option<CeOverrides>,
    /// `type` of events built from non-CloudEvent requests (default `dev.switchyard.webhook`).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub ty: Option<String>,
    /// `source` of events built from non-CloudEvent requests (default
    /// `/apis/v1/namespaces/{ns}/webhooksources/{name}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Where `subject` comes from, for events built from non-CloudEvent requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<SubjectFrom>,
    /// A header whose value becomes the event `id` (e.g. `X-GitHub-Delivery`), so a
    /// redelivered webhook gets the same id; without it (or when absent) a new id is made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_header: Option<String>,
    /// Who may call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<WebhookAuth>,
}

/// A WebhookSource (our kind): an HTTP endpoint, `POST /sources/{namespace}/{name}`, that turns
/// requests into CloudEvents in a broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WebhookSource {
    /// Identity of the source.
    pub metadata: ObjectMeta,
    /// What it does.
    pub spec: WebhookSourceSpec,
}

fn header_name(field: &str, name: &str) -> Result<(), FieldError> {
    if http::HeaderName::from_bytes(name.as_bytes()).is_ok() {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!("`{name}` is not a header name"),
        ))
    }
}

impl WebhookSource {
    pub(crate) fn validate(&self) -> Result<(), FieldError> {
        self.metadata.validate()?;
        let spec = &self.spec;
        validate_common(&spec.sink, spec.ce_overrides.as_ref())?;
        if let Some(t) = &spec.ty {
            crate::validate::non_empty_string("type", t)
                .map_err(|e| FieldError::new("spec.type", e.to_string()))?;
        }
        if let Some(src) = &spec.source {
            crate::validate::uri_reference("source", src)
                .map_err(|e| FieldError::new("spec.source", e.to_string()))?;
        }
        if let Some(sub) = &spec.subject {
            match (&sub.header, &sub.json_pointer) {
                (Some(h), None) => header_name("spec.subject.header", h)?,
                (None, Some(p)) if p.is_empty() || p.starts_with('/') => {}
                (None, Some(_)) => {
                    return Err(FieldError::new(
                        "spec.subject.jsonPointer",
                        "must be empty or start with `/` (a JSON pointer)",
                    ));
                }
                _ => {
                    return Err(FieldError::new(
                        "spec.subject",
                        "give exactly one of `header` or `jsonPointer`",
                    ));
                }
            }
        }
        if let Some(h) = &spec.id_header {
            header_name("spec.idHeader", h)?;
        }
        if let Some(auth) = &spec.auth {
            validate_auth("spec.auth", auth)?;
        }
        Ok(())
    }
}

/// Checks what every source's `sink` and `ceOverrides` share.
pub(crate) fn validate_common(
    sink: &Destination,
    overrides: Option<&CeOverrides>,
) -> Result<(), FieldError> {
    sink.validate("spec.sink")?;
    if let (Some(r), Some(_)) = (&sink.reference, &sink.uri)
        && r.kind == "Broker"
    {
        return Err(FieldError::new(
            "spec.sink.uri",
            "a source stores its events in the Broker its ref names: give no `uri` with it",
        ));
    }
    if let Some(o) = overrides {
        for name in o.extensions.keys() {
            let field = format!("spec.ceOverrides.extensions.{name}");
            crate::validate::extension_name(name)
                .map_err(|e| FieldError::new(field.clone(), e.to_string()))?;
            if crate::event::CORE_ATTRIBUTES.contains(&name.as_str())
                || BROKER_STAMPS.contains(&name.as_str())
            {
                return Err(FieldError::new(
                    field,
                    "names a context attribute or one the broker sets; ceOverrides only add extensions",
                ));
            }
        }
    }
    Ok(())
}

/// Extensions the broker stamps itself, which `ceOverrides` may not set either.
const BROKER_STAMPS: &[&str] = &[
    crate::resources::ARRIVAL_EXTENSION,
    crate::resources::TTL_EXTENSION,
];

fn validate_auth(field: &str, auth: &WebhookAuth) -> Result<(), FieldError> {
    if let Some(t) = &auth.bearer_token {
        t.validate(&format!("{field}.bearerToken"))?;
    }
    if let Some(h) = &auth.hmac {
        h.secret.validate(&format!("{field}.hmac.secret"))?;
        if let Some(name) = &h.header {
            header_name(&format!("{field}.hmac.header"), name)?;
        }
    }
    Ok(())
}

/// What a PingSource does with the slots it missed while the server was not running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub enum CatchUpPolicy {
    /// Fire none of them (Knative's behaviour, the default).
    #[default]
    None,
    /// Fire the most recent one (as a Kubernetes CronJob does).
    Last,
    /// Fire every one, oldest first.
    All,
}

/// How a PingSource catches up after downtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CatchUp {
    /// `none` (default), `last` or `all`.
    #[serde(default)]
    pub policy: CatchUpPolicy,
    /// Only slots at most this old are caught up (default one hour).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Duration>,
}

impl CatchUp {
    /// The default window: one hour.
    pub const DEFAULT_WINDOW: std::time::Duration = std::time::Duration::from_secs(3600);

    /// The window in force.
    pub fn window(&self) -> std::time::Duration {
        self.window.map_or(Self::DEFAULT_WINDOW, |d| d.0)
    }
}

/// The most missed slots a PingSource fires after downtime with `catchUp.policy: all`.
pub const MAX_CATCH_UP_SLOTS: usize = 1000;

/// `spec` of a PingSource (Knative's fields, plus `catchUp`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PingSourceSpec {
    /// Where events go: a `ref` to a Broker, or a `uri`.
    pub sink: Destination,
    /// Extensions added to every event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ce_overrides: Option<CeOverrides>,
    /// A cron schedule: 5 fields (minute hour day-of-month month day-of-week), or 6 with
    /// seconds first; may start with `CRON_TZ=<zone> ` as in Knative.
    pub schedule: String,
    /// IANA time zone the schedule is read in (default UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// `datacontenttype` of the events (none when not given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// The events' data, as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// The events' data, base64-encoded binary (instead of `data`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_base64: Option<String>,
    /// What to do with slots missed while the server was down (default: nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catch_up: Option<CatchUp>,
}

/// A PingSource (Knative's kind): fires an event on a cron schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PingSource {
    /// Identity of the source.
    pub metadata: ObjectMeta,
    /// What it does.
    pub spec: PingSourceSpec,
}

impl PingSource {
    /// The parsed schedule.
    pub fn schedule(&self) -> Result<Schedule, FieldError> {
        Schedule::parse(&self.spec.schedule, self.spec.timezone.as_deref()).map_err(|e| {
            let field = if e.contains("time zone") {
                "spec.timezone"
            } else {
                "spec.schedule"
            };
            FieldError::new(field, e)
        })
    }

    /// The events' data bytes, if any.
    pub fn data_bytes(&self) -> Result<Option<Vec<u8>>, FieldError> {
        use base64::Engine as _;
        match (&self.spec.data, &self.spec.data_base64) {
            (Some(_), Some(_)) => Err(FieldError::new(
                "spec.dataBase64",
                "give `data` or `dataBase64`, not both",
            )),
            (Some(d), None) => Ok(Some(d.clone().into_bytes())),
            (None, Some(b)) => base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .map(Some)
                .map_err(|e| FieldError::new("spec.dataBase64", format!("not base64: {e}"))),
            (None, None) => Ok(None),
        }
    }

    pub(crate) fn validate(&self) -> Result<(), FieldError> {
        self.metadata.validate()?;
        validate_common(&self.spec.sink, self.spec.ce_overrides.as_ref())?;
        self.schedule()?;
        self.data_bytes()?;
        if let Some(ct) = &self.spec.content_type {
            crate::validate::non_empty_string("datacontenttype", ct)
                .map_err(|e| FieldError::new("spec.contentType", e.to_string()))?;
        }
        if let Some(c) = &self.spec.catch_up
            && c.window.is_some_and(|w| w.0.is_zero())
        {
            return Err(FieldError::new(
                "spec.catchUp.window",
                "must be longer than zero",
            ));
        }
        Ok(())
    }
}

/// S3Source's webhook mode: MinIO, Ceph RGW or any sender posting S3-shaped notifications.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct S3Webhook {
    /// Who may call (MinIO sends `Authorization: Bearer <token>` when given an auth token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<WebhookAuth>,
}

/// S3Source's SNS mode: an SNS topic delivering S3 notifications over HTTP(S).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct S3Sns {
    /// Hosts a `SubscribeURL` may point at: `*` stands for one DNS label, `{region}` for an
    /// AWS region's name (default `sns.{region}.amazonaws.com` and its `.com.cn` twin).
    /// Confirmation URLs elsewhere are refused, and a host matched by a pattern with a
    /// wildcard must not resolve to an internal address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_hosts: Vec<String>,
    /// Only these topic ARNs are accepted (default: any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topic_arns: Vec<String>,
    /// Extra check of the caller (SNS can send basic auth or a token in the URL only through
    /// a proxy; most leave this out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<WebhookAuth>,
    /// Admit messages without checking their signature (default `false`: every message must
    /// be signed by the certificate at its `SigningCertURL`, https on an allowed host). Only
    /// for senders that imitate SNS without its keys, such as local emulators.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_skip_signature_verification: bool,
}

impl S3Sns {
    /// The allow-list in force.
    pub fn allowed_hosts(&self) -> Vec<String> {
        if self.allowed_hosts.is_empty() {
            S3Sns::default_allowed_hosts()
        } else {
            self.allowed_hosts.clone()
        }
    }

    /// The allow-list when none is given: SNS's own hosts in every AWS region.
    pub fn default_allowed_hosts() -> Vec<String> {
        vec![
            "sns.{region}.amazonaws.com".to_owned(),
            "sns.{region}.amazonaws.com.cn".to_owned(),
        ]
    }
}

/// AWS credentials for SQS polling.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AwsCredentials {
    /// The access key id.
    pub access_key_id: SecretValue,
    /// The secret access key.
    pub secret_access_key: SecretValue,
    /// A session token, for temporary credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_token: Option<SecretValue>,
}

/// S3Source's SQS mode: long-polls a queue the bucket (directly or through SNS) notifies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct S3Sqs {
    /// The queue's URL, e.g. `https://sqs.eu-west-1.amazonaws.com/123456789012/uploads`.
    pub queue_url: String,
    /// The AWS region (signing scope).
    pub region: String,
    /// Where SQS is reached, when not at the queue URL's host (e.g. a local test server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Credentials (default: `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` /
    /// `AWS_SESSION_TOKEN` from the environment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<AwsCredentials>,
    /// Long-poll wait per receive, 1 to 20 seconds (default 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_time_seconds: Option<u32>,
    /// Messages per receive, 1 to 10 (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_messages: Option<u32>,
    /// Where malformed messages are moved (sent, then deleted from the queue). Without it they
    /// stay in the queue, so the queue's own redrive policy moves them aside.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_queue_url: Option<String>,
}

/// `spec` of an S3Source: exactly one of `webhook`, `sns` or `sqs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct S3SourceSpec {
    /// Where events go: a `ref` to a Broker, or a `uri`.
    pub sink: Destination,
    /// Extensions added to every event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ce_overrides: Option<CeOverrides>,
    /// Notifications posted to `POST /sources/{ns}/{name}` in S3's (or MinIO's) shape.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<S3Webhook>,
    /// Notifications from an SNS topic's HTTP(S) subscription at `POST /sources/{ns}/{name}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sns: Option<S3Sns>,
    /// Notifications taken from an SQS queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sqs: Option<S3Sqs>,
}

/// An S3Source (our kind): S3 bucket notifications as CloudEvents, one per record, following
/// the CloudEvents AWS S3 adapter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct S3Source {
    /// Identity of the source.
    pub metadata: ObjectMeta,
    /// What it does.
    pub spec: S3SourceSpec,
}

impl S3Source {
    pub(crate) fn validate(&self) -> Result<(), FieldError> {
        self.metadata.validate()?;
        let spec = &self.spec;
        validate_common(&spec.sink, spec.ce_overrides.as_ref())?;
        let modes = usize::from(spec.webhook.is_some())
            + usize::from(spec.sns.is_some())
            + usize::from(spec.sqs.is_some());
        if modes != 1 {
            return Err(FieldError::new(
                "spec",
                "give exactly one of `webhook`, `sns` or `sqs`",
            ));
        }
        if let Some(a) = spec.webhook.as_ref().and_then(|w| w.auth.as_ref()) {
            validate_auth("spec.webhook.auth", a)?;
        }
        if let Some(sns) = &spec.sns {
            if let Some(a) = &sns.auth {
                validate_auth("spec.sns.auth", a)?;
            }
            for h in &sns.allowed_hosts {
                let wild_inside_a_label = h
                    .split('.')
                    .any(|l| l != "*" && l != "{region}" && l.contains(['*', '{', '}']));
                if h.is_empty() || h.contains(['/', ':', ' ']) || wild_inside_a_label {
                    return Err(FieldError::new(
                        "spec.sns.allowedHosts",
                        format!(
                            "`{h}` is not a host name pattern (`*` and `{{region}}` stand for a whole label: `sns.{{region}}.amazonaws.com`)"
                        ),
                    ));
                }
            }
        }
        if let Some(sqs) = &spec.sqs {
            crate::resources::validate_http_url("spec.sqs.queueUrl", &sqs.queue_url)?;
            if let Some(e) = &sqs.endpoint {
                crate::resources::validate_http_url("spec.sqs.endpoint", e)?;
            }
            if let Some(d) = &sqs.dead_letter_queue_url {
                crate::resources::validate_http_url("spec.sqs.deadLetterQueueUrl", d)?;
            }
            if sqs.region.is_empty() {
                return Err(FieldError::new("spec.sqs.region", "must not be empty"));
            }
            if sqs
                .wait_time_seconds
                .is_some_and(|w| !(1..=20).contains(&w))
            {
                return Err(FieldError::new(
                    "spec.sqs.waitTimeSeconds",
                    "must be 1 to 20",
                ));
            }
            if sqs.max_messages.is_some_and(|m| !(1..=10).contains(&m)) {
                return Err(FieldError::new("spec.sqs.maxMessages", "must be 1 to 10"));
            }
            if let Some(c) = &sqs.credentials {
                c.access_key_id
                    .validate("spec.sqs.credentials.accessKeyId")?;
                c.secret_access_key
                    .validate("spec.sqs.credentials.secretAccessKey")?;
                if let Some(t) = &c.session_token {
                    t.validate("spec.sqs.credentials.sessionToken")?;
                }
            }
        }
        Ok(())
    }
}
