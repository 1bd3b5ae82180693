//! Just enough AWS for the S3 source: Signature Version 4 and the SQS JSON protocol
//! (ReceiveMessage, DeleteMessage, SendMessage, ChangeMessageVisibility).

use chrono::{DateTime, Utc};
use hmac::{KeyInit as _, Mac as _};
use sha2::{Digest as _, Sha256};

type HmacSha256 = hmac::Hmac<Sha256>;

/// AWS credentials.
#[derive(Clone)]
pub struct Credentials {
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
    /// Session token of temporary credentials.
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length; this cannot fail.
    let mut mac = HmacSha256::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// The headers (name, value) that sign a `POST /` with `body` to `host` at `now`: SigV4 over
/// `content-type`, `host`, `x-amz-date`, `x-amz-security-token` (when given) and every
/// `extra` header (lowercase names).
pub fn sign_post(
    credentials: &Credentials,
    region: &str,
    service: &str,
    host: &str,
    extra: &[(&str, &str)],
    body: &[u8],
    now: DateTime<Utc>,
) -> Vec<(String, String)> {
    let amz_date = now.format("%Y%m%dT%H%M%SZ").to_string();
    let date = now.format("%Y%m%d").to_string();
    let mut headers: Vec<(String, String)> = vec![
        ("host".into(), host.to_owned()),
        ("x-amz-date".into(), amz_date.clone()),
    ];
    if let Some(t) = &credentials.session_token {
        headers.push(("x-amz-security-token".into(), t.clone()));
    }
    for (k, v) in extra {
        headers.push((k.to_ascii_lowercase(), (*v).to_owned()));
    }
    headers.sort();
    let canonical_headers: String = headers
        .iter()
        .map(|(k, v)| format!("{k}:{}\n", v.trim()))
        .collect();
    let signed: Vec<&str> = headers.iter().map(|(k, _)| k.as_str()).collect();
    let signed = signed.join(";");
    let canonical = format!(
        "POST\n/\n\n{canonical_headers}\n{signed}\n{}",
        hex(&Sha256::digest(body))
    );
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex(&Sha256::digest(canonical.as_bytes()))
    );
    let mut key = hmac(
        format!("AWS4{}", credentials.secret_access_key).as_bytes(),
        date.as_bytes(),
    );
    for part in [region, service, "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    let signature = hex(&hmac(&key, to_sign.as_bytes()));
    headers.retain(|(k, _)| k != "host");
    headers.push((
        "authorization".into(),
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, Signature={signature}",
            credentials.access_key_id
        ),
    ));
    headers
}

/// Why an SQS call failed.
#[derive(Debug, thiserror::Error)]
pub enum SqsError {
    /// No answer.
    #[error("sqs request failed: {0}")]
    Transport(String),
    /// An error answer.
    #[error("sqs answered {status}: {body}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The body (AWS's `__type` and `message`).
        body: String,
    },
}

/// One received message.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Message {
    /// SQS's id of the message.
    pub message_id: String,
    /// What deletes it.
    pub receipt_handle: String,
    /// The body.
    pub body: String,
}

#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Received {
    #[serde(default)]
    messages: Vec<Message>,
}

/// An SQS queue reached over the JSON protocol.
#[derive(Debug, Clone)]
pub struct Queue {
    client: reqwest::Client,
    /// The queue's URL.
    pub url: String,
    endpoint: String,
    host: String,
    region: String,
    credentials: Credentials,
}

impl Queue {
    /// A queue at `url`, reached at `endpoint` (default: the URL's scheme and host).
    pub fn new(
        client: reqwest::Client,
        url: &str,
        endpoint: Option<&str>,
        region: &str,
        credentials: Credentials,
    ) -> Result<Queue, String> {
        let base = reqwest::Url::parse(endpoint.unwrap_or(url))
            .map_err(|e| format!("`{}` is not a URL: {e}", endpoint.unwrap_or(url)))?;
        let host = match (base.host_str(), base.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            _ => return Err(format!("`{base}` has no host")),
        };
        Ok(Queue {
            client,
            url: url.to_owned(),
            endpoint: format!("{}://{host}/", base.scheme()),
            host,
            region: region.to_owned(),
            credentials,
        })
    }

    async fn call(
        &self,
        action: &str,
        body: serde_json::Value,
        timeout: std::time::Duration,
    ) -> Result<bytes::Bytes, SqsError> {
        let body = serde_json::to_vec(&body).map_err(|e| SqsError::Transport(e.to_string()))?;
        let target = format!("AmazonSQS.{action}");
        let headers = sign_post(
            &self.credentials,
            &self.region,
            "sqs",
            &self.host,
            &[
                ("content-type", "application/x-amz-json-1.0"),
                ("x-amz-target", &target),
            ],
            &body,
            Utc::now(),
        );
        let mut req = self.client.post(&self.endpoint).timeout(timeout).body(body);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| SqsError::Transport(e.to_string()))?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| SqsError::Transport(e.to_string()))?;
        if status.is_success() {
            Ok(bytes)
        } else {
            Err(SqsError::Status {
                status: status.as_u16(),
                body: String::from_utf8_lossy(&bytes).into_owned(),
            })
        }
    }

    /// Long-polls for up to `max` messages, waiting up to `wait_s` seconds.
    pub async fn receive(&self, max: u32, wait_s: u32) -> Result<Vec<Message>, SqsError> {
        let bytes = self
            .call(
                "ReceiveMessage",
                serde_json::json!({
                    "QueueUrl": self.url,
                    "MaxNumberOfMessages": max,
                    "WaitTimeSeconds": wait_s,
                }),
                std::time::Duration::from_secs(u64::from(wait_s) + 10),
            )
            .await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Vec::new());
        }
        serde_json::from_slice::<Received>(&bytes)
            .map(|r| r.messages)
            .map_err(|e| SqsError::Transport(format!("unreadable ReceiveMessage answer: {e}")))
    }

    /// Deletes a received message.
    pub async fn delete(&self, receipt_handle: &str) -> Result<(), SqsError> {
        self.call(
            "DeleteMessage",
            serde_json::json!({ "QueueUrl": self.url, "ReceiptHandle": receipt_handle }),
            std::time::Duration::from_secs(10),
        )
        .await
        .map(drop)
    }

    /// Sends a message with string attributes.
    pub async fn send(&self, body: &str, attributes: &[(&str, &str)]) -> Result<(), SqsError> {
        let attrs: serde_json::Map<String, serde_json::Value> = attributes
            .iter()
            .map(|(k, v)| {
                (
                    (*k).to_owned(),
                    serde_json::json!({ "DataType": "String", "StringValue": v }),
                )
            })
            .collect();
        self.call(
            "SendMessage",
            serde_json::json!({ "QueueUrl": self.url, "MessageBody": body, "MessageAttributes": attrs }),
            std::time::Duration::from_secs(10),
        )
        .await
        .map(drop)
    }

    /// Hides a message for `seconds` more (so it is not received again at once).
    pub async fn hide(&self, receipt_handle: &str, seconds: u32) -> Result<(), SqsError> {
        self.call(
            "ChangeMessageVisibility",
            serde_json::json!({
                "QueueUrl": self.url,
                "ReceiptHandle": receipt_handle,
                "VisibilityTimeout": seconds,
            }),
            std::time::Duration::from_secs(10),
        )
        .await
        .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at_ten() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-28T10:00:00Z")
            .map(|d| d.with_timezone(&Utc))
            .unwrap_or_default()
    }

    const BODY: &[u8] = br#"{"QueueUrl":"https://sqs.eu-west-1.amazonaws.com/123456789012/uploads","MaxNumberOfMessages":10}"#;

    fn authorization(headers: &[(String, String)]) -> &str {
        headers
            .iter()
            .find(|(k, _)| k == "authorization")
            .map_or("", |(_, v)| v.as_str())
    }

    /// The expected values come from botocore's `SigV4Auth` for the same request and time.
    #[test]
    fn signatures_match_botocore() {
        let creds = Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
        };
        let extra = [
            ("content-type", "application/x-amz-json-1.0"),
            ("x-amz-target", "AmazonSQS.ReceiveMessage"),
        ];
        let h = sign_post(
            &creds,
            "eu-west-1",
            "sqs",
            "sqs.eu-west-1.amazonaws.com",
            &extra,
            BODY,
            at_ten(),
        );
        assert_eq!(
            authorization(&h),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261128/eu-west-1/sqs/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=2f5a2c0388da78b2e2c9a9f3b61de252e452ddf9f21d34635f92ef07833fdacc"
        );
        let with_token = Credentials {
            session_token: Some("SESSIONTOKEN".into()),
            ..creds
        };
        let h = sign_post(
            &with_token,
            "us-east-1",
            "sqs",
            "127.0.0.1:5959",
            &extra,
            BODY,
            at_ten(),
        );
        assert_eq!(
            authorization(&h),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261128/us-east-1/sqs/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-security-token;x-amz-target, Signature=0378e42cb41dfab1f8f630afe4493a79536388c94da3c9fed5ad17ede06f1419"
        );
    }
}
