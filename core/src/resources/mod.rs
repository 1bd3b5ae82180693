//! Resource types (Knative-shaped: `apiVersion`, `kind`, `metadata`, `spec`) and their
//! validation, a file a concern: [`meta`] (what every resource shares), [`address`] (where a
//! `ref` points, and the AddressTable), [`delivery`],
//! [`broker`], [`trigger`] (and the Sink), [`eventtype`]. The sources' kinds are in
//! [`crate::sources`] and [`crate::streams`]; every kind is listed once in [`crate::kinds`];
//! loading from files lives in [`crate::config`].

pub mod address;
pub mod broker;
pub mod delivery;
pub mod eventtype;
pub mod flows;
pub mod meta;
pub mod trigger;

pub use address::*;
pub use broker::*;
pub use delivery::*;
pub use eventtype::*;
pub use flows::*;
pub use meta::*;
pub use trigger::*;

/// `apiVersion` of Knative's Broker and Trigger, which load unchanged.
pub const KNATIVE_EVENTING_V1: &str = "eventing.knative.dev/v1";
/// `apiVersion` of Knative's EventType, which loads unchanged.
pub const KNATIVE_EVENTING_V1BETA2: &str = "eventing.knative.dev/v1beta2";
/// `apiVersion` of Switchyard's own kinds.
pub const SWITCHYARD_V1: &str = "switchyard.dev/v1";
/// The namespace of a resource whose metadata names none.
pub const DEFAULT_NAMESPACE: &str = "default";
/// The default `knativebrokerttl` given to events that arrive without one.
pub const DEFAULT_BROKER_TTL: i32 = 255;
/// The extension that carries a broker's loop guard (stamped by `switchyard_broker::append`).
pub const TTL_EXTENSION: &str = "knativebrokerttl";
/// The extension that records when a broker received an event (stamped likewise).
pub const ARRIVAL_EXTENSION: &str = "knativearrivaltime";

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration as StdDuration;

    #[test]
    fn durations_in_both_forms() {
        let s = |t: &str| Duration::parse(t).map(|d| d.0);
        assert_eq!(s("PT0.2S"), Ok(StdDuration::from_millis(200)));
        assert_eq!(s("PT1M30S"), Ok(StdDuration::from_secs(90)));
        assert_eq!(s("P1D"), Ok(StdDuration::from_secs(86400)));
        assert_eq!(s("P1DT1H"), Ok(StdDuration::from_secs(90000)));
        assert_eq!(s("500ms"), Ok(StdDuration::from_millis(500)));
        assert_eq!(s("7d"), Ok(StdDuration::from_secs(7 * 86400)));
        for bad in ["", "P", "PT", "PT1", "1", "10x", "P1S", "PT-1S", "abc"] {
            assert!(s(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Duration(StdDuration::from_millis(1500)).to_string(),
            "PT1.500S"
        );
    }
}
