//! EventTypes at run time: their schemas compiled once (JSON Schema drafts 7 and 2020-12, no
//! network), matching an event to its type, the types discovered in `record` mode, and
//! [`EventTypePolicy`], the brokers' `eventTypes` settings as broker ingress, every source and
//! the dispatcher (for replies) apply them before storing. The contract is `spec/eventtypes.md`.

mod discovery;
mod policy;
mod registry;

pub use discovery::*;
pub use policy::*;
pub use registry::*;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::Value;
    use switchyard_core::config::{Config, ConfigError};
    use switchyard_core::{CloudEvent, Data};

    fn config(yaml: &str) -> Result<Config, ConfigError> {
        let resources = switchyard_core::config::parse_text(yaml, "test.yaml")?;
        Config::from_resources(resources.into_iter().map(|r| ("test.yaml".to_owned(), r)))
    }

    const BASE: &str = r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: orders}
spec: {eventTypes: enforce}
---
apiVersion: eventing.knative.dev/v1beta2
kind: EventType
metadata: {name: address}
spec:
  type: com.example.address
  schema: https://schemas.example.com/address.json
  schemaData:
    type: object
    required: [city]
    properties: {city: {type: string}}
---
apiVersion: eventing.knative.dev/v1beta2
kind: EventType
metadata: {name: order-created}
spec:
  type: com.example.order.created
  source: /orders/*
  schema: https://schemas.example.com/order.json
  reference: {kind: Broker, name: orders}
  schemaData: '{"$schema":"http://json-schema.org/draft-07/schema#","type":"object","required":["total"],"properties":{"total":{"type":"number"},"shipTo":{"$ref":"https://schemas.example.com/address.json"}}}'
"#;

    fn event(source: &str, data: &str) -> CloudEvent {
        let mut e = CloudEvent::new("1", source, "com.example.order.created").unwrap();
        e.data = Data::Json(data.into());
        e
    }

    #[test]
    fn validates_with_refs_between_registered_schemas() {
        let r = Registry::compile(&config(BASE).unwrap()).unwrap();
        let ok = event("/orders/1", r#"{"total": 3, "shipTo": {"city": "Ghent"}}"#);
        assert!(matches!(r.check("default/orders", &ok), Check::Passed(_)));
        let bad = event("/orders/1", r#"{"total": "3", "shipTo": {}}"#);
        let Check::Failed(_, v) = r.check("default/orders", &bad) else {
            panic!("expected a failure");
        };
        let mut pointers: Vec<_> = v
            .iter()
            .map(|v| (v.pointer.as_str(), v.keyword.as_str()))
            .collect();
        pointers.sort();
        assert_eq!(pointers, [("/shipTo", "required"), ("/total", "type")]);
        // Another source is not this EventType's.
        assert!(matches!(
            r.check("default/orders", &event("/other", "{}")),
            Check::NotRegistered
        ));
        // dataschema picks the schema whatever the type.
        let mut by_schema = event("/x", r#"{"city": 1}"#);
        by_schema.dataschema = Some("https://schemas.example.com/address.json".into());
        assert!(matches!(
            r.check("default/orders", &by_schema),
            Check::Failed(..)
        ));
    }

    #[test]
    fn invalid_and_remote_schemas_are_refused() {
        let bad = BASE.replace("type: object\n", "type: objekt\n");
        let e = Registry::compile(&config(&bad).unwrap()).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("spec.schemaData"));
        assert!(
            e.message.starts_with("invalid JSON Schema"),
            "{}",
            e.message
        );
        let remote = BASE.replace(
            "https://schemas.example.com/address.json\"",
            "https://elsewhere.example.com/a.json\"",
        );
        let e = Registry::compile(&config(&remote).unwrap()).unwrap_err();
        assert!(e.message.contains("does not fetch"), "{}", e.message);
        let draft4 = BASE.replace("draft-07", "draft-04");
        let e = Registry::compile(&config(&draft4).unwrap()).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("spec.schemaData.$schema"));
    }

    #[test]
    fn non_json_and_absent_data() {
        let mut e = CloudEvent::new("1", "/s", "t").unwrap();
        assert_eq!(data_value(&e), Value::Null);
        e.data = Data::Binary(bytes::Bytes::from_static(b"hello"));
        e.datacontenttype = Some("text/plain".into());
        assert_eq!(data_value(&e), Value::String("hello".into()));
        e.datacontenttype = Some("application/json".into());
        e.data = Data::Binary(bytes::Bytes::from_static(b"{\"a\":1}"));
        assert_eq!(data_value(&e), serde_json::json!({"a": 1}));
    }

    #[test]
    fn discovery_counts_and_persists_new_pairs_once() {
        let d = Discovery::default();
        let ops = d.observe(
            "ns/b",
            [("t", "/s"), ("t", "/s")].into_iter(),
            "2026-01-01T00:00:00Z",
        );
        assert_eq!(ops.len(), 1);
        assert_eq!(d.flush().len(), 1);
        assert!(d.flush().is_empty());
        let snap = d.snapshot();
        assert_eq!(snap[0].1.count, 2);
    }

    #[test]
    fn a_broker_records_at_most_its_cap_of_pairs_and_known_ones_go_on_counting() {
        const NOW: &str = "2026-01-01T00:00:00Z";
        let d = Discovery::default();
        let sources: Vec<String> = (0..=MAX_PAIRS_PER_BROKER)
            .map(|i| format!("/s{i}"))
            .collect();
        let ops = d.observe("ns/b", sources.iter().map(|s| ("t", s.as_str())), NOW);
        assert_eq!(ops.len(), MAX_PAIRS_PER_BROKER, "the pair past the cap");
        assert!(
            d.observe("ns/b", [("t", "/s0")].into_iter(), NOW)
                .is_empty()
        );
        let other = d.observe("ns/other", [("t", "/s0")].into_iter(), NOW);
        assert_eq!(other.len(), 1, "each broker has a cap of its own");
        let snap = d.snapshot();
        assert_eq!(snap.len(), MAX_PAIRS_PER_BROKER + 1);
        let s0 = snap.iter().find(|(k, _)| k.0 == "ns/b" && k.2 == "/s0");
        assert_eq!(
            s0.map(|(_, s)| s.count),
            Some(2),
            "a known pair goes on counting"
        );
    }

    #[test]
    fn a_shared_discovery_holds_its_cap_across_flushes() {
        const NOW: &str = "2026-01-01T00:00:00Z";
        let d = Discovery::shared();
        let sources: Vec<String> = (0..MAX_PAIRS_PER_BROKER)
            .map(|i| format!("/s{i}"))
            .collect();
        let _ = d.observe("ns/b", sources.iter().map(|s| ("t", s.as_str())), NOW);
        assert_eq!(d.flush().len(), MAX_PAIRS_PER_BROKER);
        let _ = d.observe("ns/b", [("t", "/s0"), ("t", "/new")].into_iter(), NOW);
        let ops = d.flush();
        assert_eq!(ops.len(), 1, "the known pair, not the new one: {ops:?}");
    }

    #[test]
    fn a_shared_discovery_hands_each_flush_what_it_saw_since_and_forgets_it() {
        let d = Discovery::shared();
        let seen = [("t", "/s"), ("t", "/s")].into_iter();
        assert!(
            d.observe("ns/b", seen, "2026-01-01T00:00:00Z").is_empty(),
            "nothing written at once"
        );
        let ops = d.flush();
        let [crate::log::WriteOp::Put { value, .. }] = ops.as_slice() else {
            panic!("one put: {ops:?}");
        };
        let counted: Seen = serde_json::from_slice(value).expect("counts");
        assert_eq!(counted.count, 2);
        assert!(d.flush().is_empty(), "what was flushed is the store's now");
        assert!(d.snapshot().is_empty());
    }

    #[test]
    fn counts_add_up_and_sightings_widen() {
        let seen = |first: &str, last: &str, count: u64| -> Seen {
            serde_json::from_value(
                serde_json::json!({"firstSeen": first, "lastSeen": last, "count": count}),
            )
            .expect("counts")
        };
        let mut total = seen("2026-01-02T00:00:00Z", "2026-01-03T00:00:00Z", 5);
        total.add(&seen("2026-01-01T00:00:00Z", "2026-01-02T12:00:00Z", 2));
        assert_eq!(
            total,
            seen("2026-01-01T00:00:00Z", "2026-01-03T00:00:00Z", 7)
        );
    }
}
