//! `DeliverySpec`: retries, backoff, timeouts, format and the dead-letter sink of a Broker or a
//! Trigger.

use serde::{Deserialize, Serialize};

use super::*;

/// How the delay between retries grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BackoffPolicy {
    /// `backoffDelay · 2^(k-1)` before retry k.
    #[default]
    Exponential,
    /// `backoffDelay · k` before retry k.
    Linear,
}

/// The content mode of deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryFormat {
    /// Binary mode: attributes in `ce-` headers.
    #[default]
    Binary,
    /// Structured mode: `application/cloudevents+json`.
    Json,
}

/// How events are delivered and retried (Knative `DeliverySpec`, plus `backoffMax`,
/// `jitter` and `holdWhileDown`). A Trigger's `delivery` replaces its Broker's as a whole.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DeliverySpec {
    /// Where events go after the last failed attempt (they are also kept in the built-in
    /// dead-letter store).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_sink: Option<Destination>,
    /// Retries after the first attempt (0 or more).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<i32>,
    /// `exponential` (default) or `linear`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_policy: Option<BackoffPolicy>,
    /// The base delay of the backoff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_delay: Option<Duration>,
    /// The longest delay between two attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_max: Option<Duration>,
    /// Random spread of each delay, as a fraction from 0 to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<f64>,
    /// Bound on each attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// The longest `Retry-After` that is honoured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_max: Option<Duration>,
    /// `binary` (default) or `json` (structured mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<DeliveryFormat>,
    /// How long an event may wait while its subscriber is down (its connections refused, as
    /// a function scaled to zero) without its attempts counting against `retry`; `PT0S`
    /// turns the down state off (`spec/delivery.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_while_down: Option<Duration>,
}

impl DeliverySpec {
    pub(crate) fn validate(&self, field: &str) -> Result<(), FieldError> {
        if let Some(dls) = &self.dead_letter_sink {
            dls.validate(&format!("{field}.deadLetterSink"))?;
        }
        if self.retry.is_some_and(|r| r < 0) {
            return Err(FieldError::new(
                format!("{field}.retry"),
                "must be 0 or more",
            ));
        }
        if self.jitter.is_some_and(|j| !(0.0..=1.0).contains(&j)) {
            return Err(FieldError::new(
                format!("{field}.jitter"),
                "must be a fraction from 0 to 1",
            ));
        }
        if self.timeout.is_some_and(|t| t.0.is_zero()) {
            return Err(FieldError::new(
                format!("{field}.timeout"),
                "must be longer than zero",
            ));
        }
        Ok(())
    }
}
