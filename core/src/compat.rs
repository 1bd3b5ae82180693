//! What Switchyard does with Knative and Kubernetes manifests beyond its own kinds, in three
//! tables (docs/knative-compatibility.md is their reader's version): kinds that are skipped
//! because they belong to Kubernetes (a Deployment, a Knative Service, a ConfigMap), kinds
//! that are refused on purpose with the reason, fields that load but are ignored, and older
//! `apiVersion`s converted as Knative's conversion webhooks do.

use serde_json::{Map, Value};

/// What [`prepare`] makes of one document.
#[derive(Debug, PartialEq)]
pub(crate) enum Prepared {
    /// Parse it as the supported `apiVersion` given; the fields it ignored, with the reason.
    Keep {
        /// The `apiVersion` to parse it as.
        api_version: &'static str,
        /// (field path, why) of each field left out.
        ignored: Vec<(String, String)>,
    },
    /// Not a resource Switchyard runs: skipped, with the reason.
    Skip(String),
    /// Refused, with the reason (what to do instead).
    Refuse(String),
    /// Not a kind this module knows: the caller says what is supported.
    Unknown,
}

/// Groups whose kinds are Kubernetes workloads and plumbing, published next to eventing
/// resources: (API group, why they are skipped).
const SKIPPED_GROUPS: &[(&str, &str)] = &[
    (
        "",
        "a Kubernetes resource: Switchyard runs no workloads and reads no Kubernetes objects",
    ),
    (
        "apps",
        "a Kubernetes workload: Switchyard runs no workloads",
    ),
    ("batch", "a Kubernetes Job: Switchyard runs no workloads"),
    (
        "rbac.authorization.k8s.io",
        "Kubernetes RBAC: Switchyard has no Kubernetes API to authorize",
    ),
    (
        "serving.knative.dev",
        "Knative Serving: Switchyard runs no workloads",
    ),
];

/// Kinds of the core group with a reason of their own.
const SKIPPED_CORE_KINDS: &[(&str, &str)] = &[
    (
        "Service",
        "a Kubernetes Service: Switchyard runs no workloads; a ref to it resolves to its cluster address (or an AddressTable entry)",
    ),
    (
        "ConfigMap",
        "a ConfigMap: Switchyard is configured by its own resources, not by Knative's ConfigMaps",
    ),
    (
        "Namespace",
        "a Namespace: a namespace exists once a resource names it",
    ),
];

/// Knative kinds refused on purpose: (kind, why, what to do instead).
const REFUSED_KINDS: &[(&str, &str)] = &[
    (
        "ApiServerSource",
        "it watches a Kubernetes API server, which Switchyard does not have",
    ),
    (
        "SinkBinding",
        "it injects K_SINK into Kubernetes workloads; give your program the broker's URL (or a WebhookSource's) as K_SINK yourself",
    ),
    (
        "ContainerSource",
        "it runs a container; run the program yourself with K_SINK set to the broker's URL (or a WebhookSource's)",
    ),
    ("JobSink", "it starts Kubernetes Jobs for events"),
    (
        "Channel",
        "channels are not implemented: use a Broker and Triggers",
    ),
    (
        "InMemoryChannel",
        "channels are not implemented: use a Broker and Triggers",
    ),
    (
        "KafkaChannel",
        "channels are not implemented: use a Broker and Triggers",
    ),
    (
        "Subscription",
        "channels are not implemented: use a Broker and Triggers",
    ),
    (
        "EventTransform",
        "transformations are not implemented yet: a subscriber that replies with the transformed event does the same",
    ),
    (
        "NatsJetStreamChannel",
        "channels are not implemented: use a Broker and Triggers (and a NatsSink to publish to JetStream)",
    ),
    (
        "RabbitmqBrokerConfig",
        "it configures the RabbitMQ broker class; Switchyard's Broker is configured in its spec",
    ),
    ("RabbitmqSource", "RabbitMQ is not a source yet"),
    (
        "IntegrationSource",
        "it runs an Apache Camel Kamelet as a Kubernetes workload",
    ),
    (
        "IntegrationSink",
        "it runs an Apache Camel Kamelet as a Kubernetes workload",
    ),
];

/// Fields that load and are ignored: (kind, field path, why).
const IGNORED_FIELDS: &[(&str, &str, &str)] = &[
    (
        "Broker",
        "spec.config",
        "broker-class configuration (a ConfigMap or a class's own object) configures Knative's implementation; Switchyard's Broker is configured in its spec",
    ),
    (
        "Sequence",
        "spec.channelTemplate",
        "the steps are Switchyard Brokers, not channels",
    ),
    (
        "Parallel",
        "spec.channelTemplate",
        "the branches are Switchyard Brokers, not channels",
    ),
];

/// Annotations that are kept but mean nothing here: (kind, annotation, why).
const IGNORED_ANNOTATIONS: &[(&str, &str, &str)] = &[(
    "Broker",
    "eventing.knative.dev/broker.class",
    "the broker class picks Knative's implementation; Switchyard is the broker",
)];

/// Older `apiVersion`s that load as the supported one: (kind, older, supported). The shapes
/// are the same except where [`convert`] says.
const CONVERTED: &[(&str, &str, &str)] = &[
    (
        "KafkaSource",
        "sources.knative.dev/v1",
        "sources.knative.dev/v1beta1",
    ),
    (
        "Trigger",
        "eventing.knative.dev/v1beta1",
        "eventing.knative.dev/v1",
    ),
    (
        "Broker",
        "eventing.knative.dev/v1beta1",
        "eventing.knative.dev/v1",
    ),
    (
        "EventType",
        "eventing.knative.dev/v1beta1",
        "eventing.knative.dev/v1beta2",
    ),
    (
        "EventType",
        "eventing.knative.dev/v1alpha1",
        "eventing.knative.dev/v1beta2",
    ),
    (
        "PingSource",
        "sources.knative.dev/v1beta2",
        "sources.knative.dev/v1",
    ),
];

/// The API group of an `apiVersion`.
fn group(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(g, _)| g)
}

/// Decides what to do with a document of `api_version`/`kind` whose other fields are `body`
/// (changed in place: ignored fields removed, older shapes converted). `supported` is the
/// supported `apiVersion` of `kind`, if the kind is Switchyard's.
pub(crate) fn prepare(
    api_version: &str,
    kind: &str,
    supported: Option<&'static str>,
    body: &mut Map<String, Value>,
) -> Prepared {
    let target = match supported {
        Some(api) if api == api_version => Some(api),
        _ => CONVERTED
            .iter()
            .find(|(k, older, _)| *k == kind && *older == api_version)
            .map(|(_, _, to)| *to),
    };
    let Some(target) = target else {
        // A kind of Switchyard's with another version (a typo, a version Knative retired):
        // refused naming the version to use, never skipped as a Kubernetes resource.
        if supported.is_some() {
            return Prepared::Unknown;
        }
        if let Some((_, why)) = REFUSED_KINDS.iter().find(|(k, _)| *k == kind)
            && group(api_version).ends_with("knative.dev")
        {
            return Prepared::Refuse(format!("{kind} is not supported: {why}"));
        }
        let g = group(api_version);
        if g.is_empty()
            && let Some((_, why)) = SKIPPED_CORE_KINDS.iter().find(|(k, _)| *k == kind)
        {
            return Prepared::Skip((*why).to_owned());
        }
        return match SKIPPED_GROUPS.iter().find(|(sg, _)| *sg == g) {
            Some((_, why)) => Prepared::Skip((*why).to_owned()),
            None => Prepared::Unknown,
        };
    };
    convert(kind, api_version, body);
    let mut ignored = Vec::new();
    for (k, path, why) in IGNORED_FIELDS {
        if *k == kind && remove_path(body, path) {
            ignored.push(((*path).to_owned(), (*why).to_owned()));
        }
    }
    let annotations = body
        .get("metadata")
        .and_then(|m| m.get("annotations"))
        .and_then(Value::as_object);
    for (k, name, why) in IGNORED_ANNOTATIONS {
        if *k == kind && annotations.is_some_and(|a| a.contains_key(*name)) {
            ignored.push((format!("metadata.annotations.{name}"), (*why).to_owned()));
        }
    }
    // Knative accepts `spec: null` (and no spec) on a Broker; so does Switchyard.
    if kind == "Broker" && body.get("spec").is_some_and(Value::is_null) {
        body.remove("spec");
    }
    Prepared::Keep {
        api_version: target,
        ignored,
    }
}

/// Converts an older shape to the supported one, as Knative's conversion webhooks do: an
/// EventType's `spec.broker` (v1alpha1, v1beta1) becomes `spec.reference` to that Broker.
fn convert(kind: &str, api_version: &str, body: &mut Map<String, Value>) {
    if kind == "EventType"
        && api_version != "eventing.knative.dev/v1beta2"
        && let Some(Value::Object(spec)) = body.get_mut("spec")
        && let Some(broker) = spec.remove("broker")
        && !spec.contains_key("reference")
    {
        let mut reference = Map::new();
        reference.insert("apiVersion".into(), "eventing.knative.dev/v1".into());
        reference.insert("kind".into(), "Broker".into());
        reference.insert("name".into(), broker);
        spec.insert("reference".into(), Value::Object(reference));
    }
}

/// Removes the field at a dotted `path`; whether it was there.
fn remove_path(body: &mut Map<String, Value>, path: &str) -> bool {
    let (parent, last) = path.rsplit_once('.').unwrap_or(("", path));
    let mut at = body;
    for part in parent.split('.').filter(|p| !p.is_empty()) {
        match at.get_mut(part) {
            Some(Value::Object(next)) => at = next,
            _ => return false,
        }
    }
    at.remove(last).is_some()
}

/// The reader's list of what this module does, for docs/knative-compatibility.md's test.
pub fn described() -> Vec<String> {
    let mut out = Vec::new();
    for (g, why) in SKIPPED_GROUPS {
        out.push(format!("skipped group `{g}`: {why}"));
    }
    for (k, why) in SKIPPED_CORE_KINDS {
        out.push(format!("skipped kind `{k}`: {why}"));
    }
    for (k, why) in REFUSED_KINDS {
        out.push(format!("refused kind `{k}`: {why}"));
    }
    for (k, path, why) in IGNORED_FIELDS {
        out.push(format!("ignored field {k} `{path}`: {why}"));
    }
    for (k, name, why) in IGNORED_ANNOTATIONS {
        out.push(format!("ignored annotation {k} `{name}`: {why}"));
    }
    for (k, older, to) in CONVERTED {
        out.push(format!("converted {k} `{older}` to `{to}`"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn kubernetes_kinds_are_skipped_and_knative_ones_refused_with_reasons() {
        let mut b = body(json!({}));
        assert!(
            matches!(prepare("v1", "Service", None, &mut b), Prepared::Skip(w) if w.contains("cluster address"))
        );
        assert!(matches!(
            prepare("apps/v1", "Deployment", None, &mut b),
            Prepared::Skip(_)
        ));
        assert!(matches!(
            prepare("serving.knative.dev/v1", "Service", None, &mut b),
            Prepared::Skip(_)
        ));
        assert!(
            matches!(prepare("sources.knative.dev/v1", "ContainerSource", None, &mut b), Prepared::Refuse(w) if w.contains("K_SINK"))
        );
        assert_eq!(
            prepare("example.com/v1", "Widget", None, &mut b),
            Prepared::Unknown
        );
        // A Trigger with a mistyped apiVersion is not a Kubernetes resource to skip.
        assert_eq!(
            prepare("v1", "Trigger", Some("eventing.knative.dev/v1"), &mut b),
            Prepared::Unknown
        );
    }

    #[test]
    fn broker_config_is_ignored_and_named() {
        let mut b = body(json!({
            "metadata": {"name": "b", "annotations": {"eventing.knative.dev/broker.class": "Kafka"}},
            "spec": {"config": {"kind": "ConfigMap", "name": "c"}, "delivery": {"retry": 2}}
        }));
        let p = prepare(
            "eventing.knative.dev/v1",
            "Broker",
            Some("eventing.knative.dev/v1"),
            &mut b,
        );
        let Prepared::Keep { ignored, .. } = p else {
            panic!("{p:?}")
        };
        let fields: Vec<&str> = ignored.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.config",
                "metadata.annotations.eventing.knative.dev/broker.class"
            ]
        );
        assert_eq!(b["spec"], json!({"delivery": {"retry": 2}}));
    }

    #[test]
    fn older_event_types_convert_their_broker_to_a_reference() {
        let mut b =
            body(json!({"metadata": {"name": "e"}, "spec": {"type": "t", "broker": "default"}}));
        let p = prepare(
            "eventing.knative.dev/v1beta1",
            "EventType",
            Some("eventing.knative.dev/v1beta2"),
            &mut b,
        );
        assert!(matches!(
            p,
            Prepared::Keep {
                api_version: "eventing.knative.dev/v1beta2",
                ..
            }
        ));
        assert_eq!(b["spec"]["reference"]["name"], json!("default"));
        assert!(b["spec"].get("broker").is_none());
    }
}
