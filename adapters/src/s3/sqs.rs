//! The S3Source's SQS pollers: receive, store, then delete; malformed messages moved to the
//! dead-letter queue or kept.

use std::sync::Arc;
use std::time::Duration;

use switchyard_broker::eventtypes::EventTypePolicy;
use switchyard_broker::log::{EventLog, LogError};
use switchyard_core::CloudEvent;
use switchyard_core::backoff::Backoff;
use switchyard_core::config::Config;
use switchyard_core::id::SourceId;
use switchyard_core::sources::S3Source;

use crate::aws::{Credentials, Queue};
use crate::target::Target;
use switchyard_broker::tasks::Tasks;

use super::*;

struct Poller {
    id: String,
    queue: Queue,
    dead_letters: Option<Queue>,
    target: Target,
    log: Arc<dyn EventLog>,
    max_messages: u32,
    wait_s: u32,
}

fn credentials(s: &S3Source) -> Result<Credentials, String> {
    match s.spec.sqs.as_ref().and_then(|q| q.credentials.as_ref()) {
        Some(c) => Ok(Credentials {
            access_key_id: c
                .access_key_id
                .resolve()
                .map_err(|m| format!("spec.sqs.credentials.accessKeyId: {m}"))?,
            secret_access_key: c
                .secret_access_key
                .resolve()
                .map_err(|m| format!("spec.sqs.credentials.secretAccessKey: {m}"))?,
            session_token: c
                .session_token
                .as_ref()
                .map(|t| t.resolve())
                .transpose()
                .map_err(|m| format!("spec.sqs.credentials.sessionToken: {m}"))?,
        }),
        None => {
            let var = |name: &str| {
                std::env::var(name).map_err(|_| {
                    format!(
                        "no spec.sqs.credentials and the environment variable `{name}` is not set"
                    )
                })
            };
            Ok(Credentials {
                access_key_id: var("AWS_ACCESS_KEY_ID")?,
                secret_access_key: var("AWS_SECRET_ACCESS_KEY")?,
                session_token: std::env::var("AWS_SESSION_TOKEN").ok(),
            })
        }
    }
}

/// Starts a poller for every S3Source in SQS mode.
pub fn start_pollers(
    config: &Config,
    event_types: &Arc<EventTypePolicy>,
    log: &Arc<dyn EventLog>,
    client: &reqwest::Client,
) -> Result<Tasks, String> {
    let mut pollers = Vec::new();
    for ((ns, name), s) in &config.s3_sources {
        let Some(sqs) = &s.spec.sqs else { continue };
        let id = SourceId::new(ns, name).to_string();
        let err = |m: String| format!("S3Source {id}: {m}");
        let creds = credentials(s).map_err(err)?;
        let queue = Queue::new(
            client.clone(),
            &sqs.queue_url,
            sqs.endpoint.as_deref(),
            &sqs.region,
            creds.clone(),
        )
        .map_err(err)?;
        let dead_letters = sqs
            .dead_letter_queue_url
            .as_deref()
            .map(|u| {
                Queue::new(
                    client.clone(),
                    u,
                    sqs.endpoint.as_deref(),
                    &sqs.region,
                    creds,
                )
            })
            .transpose()
            .map_err(err)?;
        pollers.push(Poller {
            id: id.clone(),
            queue,
            dead_letters,
            target: target(config, event_types, ns, name, &s.spec),
            log: Arc::clone(log),
            max_messages: sqs.max_messages.unwrap_or(10),
            wait_s: sqs.wait_time_seconds.unwrap_or(20),
        });
    }
    let mut tasks = Tasks::new("SQS pollers");
    for p in pollers {
        tasks.spawn(p.run());
    }
    Ok(tasks)
}

/// The S3 notification inside an SQS message body: SNS-in-SQS is unwrapped.
pub(super) fn unwrap_sqs_body(body: &str) -> Result<Vec<CloudEvent>, Malformed> {
    let v: serde_json::Value = serde_json::from_str(body)
        .map_err(|e| Malformed(format!("the message body is not JSON: {e}")))?;
    if v.get("Type").and_then(|t| t.as_str()) == Some("Notification")
        && let Some(message) = v.get("Message").and_then(|m| m.as_str())
    {
        return map_notification(message.as_bytes());
    }
    map_notification(body.as_bytes())
}

impl Poller {
    async fn run(self) {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
        tracing::info!(source = %self.id, queue = %self.queue.url, "polling SQS");
        loop {
            match self.queue.receive(self.max_messages, self.wait_s).await {
                Ok(messages) => {
                    backoff.reset();
                    for m in messages {
                        if self.take(&m).await.is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    let pause = backoff.next_pause();
                    tracing::warn!(source = %self.id, error = %e, retry_in_ms = pause.as_millis() as u64, "SQS receive failed");
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }

    /// Stores one message's events (waiting as long as the broker pushes back: no more
    /// messages are pulled meanwhile), then deletes it. Err only when the store shuts down.
    async fn take(&self, m: &crate::aws::Message) -> Result<(), LogError> {
        match unwrap_sqs_body(&m.body) {
            Ok(mut events) => {
                if !events.is_empty() {
                    let encoded = match self.target.prepare(&mut events) {
                        Ok(e) => e,
                        Err(refused) => {
                            self.set_aside(m, &refused.to_string()).await;
                            return Ok(());
                        }
                    };
                    self.target
                        .append_until_stored(&self.log, encoded, Vec::new())
                        .await?;
                }
                // The events are stored; a failed delete only means SQS delivers the message
                // again, and the same ids make the duplicate recognisable.
                if let Err(e) = self.queue.delete(&m.receipt_handle).await {
                    tracing::warn!(source = %self.id, message = %m.message_id, error = %e, "could not delete a stored message; SQS will deliver it again");
                }
            }
            Err(e) => self.set_aside(m, &e.to_string()).await,
        }
        Ok(())
    }

    async fn set_aside(&self, m: &crate::aws::Message, error: &str) {
        tracing::error!(source = %self.id, message = %m.message_id, %error, "malformed S3 notification");
        let action = match &self.dead_letters {
            Some(dlq) => match dlq
                .send(
                    &m.body,
                    &[("switchyard-error", error), ("switchyard-source", &self.id)],
                )
                .await
            {
                Ok(()) => match self.queue.delete(&m.receipt_handle).await {
                    Ok(()) => "moved",
                    Err(e) => {
                        tracing::warn!(source = %self.id, error = %e, "moved a malformed message but could not delete it");
                        "moved"
                    }
                },
                Err(e) => {
                    tracing::warn!(source = %self.id, error = %e, "could not move a malformed message to the dead-letter queue; it stays in the queue");
                    let _ = self.queue.hide(&m.receipt_handle, 300).await;
                    "kept"
                }
            },
            None => {
                // Left in the queue (hidden for 5 minutes) for the queue's redrive policy.
                let _ = self.queue.hide(&m.receipt_handle, 300).await;
                "kept"
            }
        };
        self.target.malformed(action);
    }
}
