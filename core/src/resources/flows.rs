//! Knative's flows (`flows.knative.dev/v1`): a Sequence passes an event through its steps in
//! turn, each step's reply going to the next; a Parallel sends it to every branch, through the
//! branch's filter (a subscriber that replies to let it pass) to its subscriber. The loader
//! builds them from Brokers and Triggers (`Config::add_flows`), so every step is delivered,
//! retried and dead-lettered like any Trigger.

use serde::{Deserialize, Serialize};

use super::delivery::DeliverySpec;
use super::meta::{Destination, FieldError, KReference, ObjectMeta};

/// `apiVersion` of Knative's flows.
pub const KNATIVE_FLOWS_V1: &str = "flows.knative.dev/v1";

/// A destination with the delivery settings of the Trigger that sends to it (a Sequence step,
/// a Parallel branch's subscriber).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SequenceStep {
    /// Reference to what receives the event ([`Destination`]).
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<KReference>,
    /// Its URL, or a URL relative to the `ref`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Retries, backoff and dead letters for this step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliverySpec>,
}

impl SequenceStep {
    /// The step as a Destination.
    pub fn destination(&self) -> Destination {
        Destination {
            reference: self.reference.clone(),
            uri: self.uri.clone(),
            ca_certs: None,
            audience: None,
        }
    }
}

/// `spec` of a Sequence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SequenceSpec {
    /// The steps, in order: the event goes to the first, each step's reply to the next.
    pub steps: Vec<SequenceStep>,
    /// Where the last step's reply goes; without it, that reply is dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<Destination>,
}

/// `flows.knative.dev/v1` Sequence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Sequence {
    /// Identity of the sequence.
    pub metadata: ObjectMeta,
    /// Its steps.
    pub spec: SequenceSpec,
}

/// One branch of a Parallel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ParallelBranch {
    /// A subscriber that decides: its reply (the event, or another) passes on to the branch's
    /// subscriber; no reply drops it. Without a filter every event passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<Destination>,
    /// Where the branch's events go.
    pub subscriber: Destination,
    /// Where the subscriber's reply goes; the Parallel's `reply` when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<Destination>,
    /// Retries, backoff and dead letters for the branch's filter and subscriber.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliverySpec>,
}

/// `spec` of a Parallel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ParallelSpec {
    /// The branches; every event goes to each.
    pub branches: Vec<ParallelBranch>,
    /// Where the branches' replies go unless a branch says otherwise; without it they are
    /// dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<Destination>,
}

/// `flows.knative.dev/v1` Parallel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Parallel {
    /// Identity of the parallel.
    pub metadata: ObjectMeta,
    /// Its branches.
    pub spec: ParallelSpec,
}

impl Sequence {
    pub(crate) fn validate(&self) -> Result<(), FieldError> {
        self.metadata.validate()?;
        if self.spec.steps.is_empty() {
            return Err(FieldError::new("spec.steps", "give at least one step"));
        }
        for (i, step) in self.spec.steps.iter().enumerate() {
            let field = format!("spec.steps[{i}]");
            step.destination().validate(&field)?;
            if let Some(d) = &step.delivery {
                d.validate(&format!("{field}.delivery"))?;
            }
        }
        if let Some(r) = &self.spec.reply {
            r.validate("spec.reply")?;
        }
        Ok(())
    }
}

impl Parallel {
    pub(crate) fn validate(&self) -> Result<(), FieldError> {
        self.metadata.validate()?;
        if self.spec.branches.is_empty() {
            return Err(FieldError::new("spec.branches", "give at least one branch"));
        }
        for (i, b) in self.spec.branches.iter().enumerate() {
            let field = format!("spec.branches[{i}]");
            if let Some(f) = &b.filter {
                f.validate(&format!("{field}.filter"))?;
            }
            b.subscriber.validate(&format!("{field}.subscriber"))?;
            if let Some(r) = &b.reply {
                r.validate(&format!("{field}.reply"))?;
            }
            if let Some(d) = &b.delivery {
                d.validate(&format!("{field}.delivery"))?;
            }
        }
        if let Some(r) = &self.spec.reply {
            r.validate("spec.reply")?;
        }
        Ok(())
    }
}
