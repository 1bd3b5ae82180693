//! Loading resources: Knative manifests, multi-document YAML, JSON, directories; and errors
//! that name the file, the resource and the field.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration as StdDuration;

use switchyard_core::config::{Config, ConfigError, parse_text};
use switchyard_core::kinds::Resource;
use switchyard_core::resources::{
    BackoffPolicy, DeliveryFormat, Duration, SubscriptionsApiFilter, Target,
};

/// A Knative Broker and Trigger as `kubectl get -o yaml` shows them, status included, plus a
/// Switchyard Sink the second trigger refers to.
const KNATIVE_MANIFEST: &str = r#"
# Knative eventing resources, unchanged.
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata:
  name: default
  namespace: shop
  labels:
    app: shop
  annotations:
    eventing.knative.dev/broker.class: MTChannelBasedBroker
  # Written by the API server; ignored on load.
  uid: 5d0e5a7c-1b2f-4e47-9a57-6c5f7d3e2a10
  resourceVersion: "48213"
  generation: 1
  creationTimestamp: "2026-11-01T10:00:00Z"
  managedFields:
    - manager: kubectl
      operation: Update
spec:
  delivery:
    deadLetterSink:
      uri: http://dlq.shop.svc.cluster.local/
    retry: 5
    backoffPolicy: exponential
    backoffDelay: PT0.2S
status:
  address:
    url: http://broker-ingress.knative-eventing.svc.cluster.local/shop/default
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: orders
  namespace: shop
spec:
  broker: default
  filter:
    attributes:
      type: com.example.order.created
      source: /orders
  subscriber:
    uri: http://orders.shop.svc.cluster.local/events
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: audit
  namespace: shop
spec:
  broker: default
  filters:
    - any:
        - exact:
            type: com.example.order.created
        - prefix:
            type: com.example.payment.
    - cesql: "source LIKE '/orders%'"
  subscriber:
    ref:
      apiVersion: switchyard.dev/v1
      kind: Sink
      name: audit
  delivery:
    retry: 0
    timeout: 10s
    format: json
---
apiVersion: switchyard.dev/v1
kind: Sink
metadata:
  name: audit
  namespace: shop
spec:
  uri: https://audit.example.com/in
"#;

fn key(ns: &str, name: &str) -> (String, String) {
    (ns.to_owned(), name.to_owned())
}

fn load_text(text: &str, file: &str) -> Result<Config, ConfigError> {
    let resources = parse_text(text, file)?;
    Config::from_resources(resources.into_iter().map(|r| (file.to_owned(), r)))
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

#[test]
fn knative_broker_and_trigger_manifest_loads() {
    let config = load_text(KNATIVE_MANIFEST, "shop.yaml").unwrap();
    assert_eq!(config.brokers.len(), 1);
    assert_eq!(config.triggers.len(), 2);
    assert_eq!(config.sinks.len(), 1);

    let broker = &config.brokers[&key("shop", "default")];
    assert_eq!(broker.metadata.labels["app"], "shop");
    assert_eq!(
        broker.metadata.annotations["eventing.knative.dev/broker.class"],
        "MTChannelBasedBroker"
    );
    let delivery = broker.spec.delivery.as_ref().unwrap();
    assert_eq!(delivery.retry, Some(5));
    assert_eq!(delivery.backoff_policy, Some(BackoffPolicy::Exponential));
    assert_eq!(
        delivery.backoff_delay,
        Some(Duration(StdDuration::from_millis(200)))
    );
    assert_eq!(
        delivery
            .dead_letter_sink
            .as_ref()
            .and_then(|d| d.uri.as_deref()),
        Some("http://dlq.shop.svc.cluster.local/")
    );
    assert_eq!(broker.ttl(), 255);

    let orders = &config.triggers[&key("shop", "orders")];
    assert_eq!(orders.spec.broker, "default");
    let attributes = &orders.spec.filter.as_ref().unwrap().attributes;
    assert_eq!(attributes["type"], "com.example.order.created");
    assert_eq!(attributes["source"], "/orders");
    assert_eq!(
        orders.spec.subscriber.uri.as_deref(),
        Some("http://orders.shop.svc.cluster.local/events")
    );

    let audit = &config.triggers[&key("shop", "audit")];
    assert_eq!(audit.spec.filters.len(), 2);
    let SubscriptionsApiFilter::Any(any) = &audit.spec.filters[0] else {
        panic!("{:?}", audit.spec.filters[0])
    };
    assert_eq!(any.len(), 2);
    assert!(
        matches!(&any[1], SubscriptionsApiFilter::Prefix(m) if m["type"] == "com.example.payment.")
    );
    assert_eq!(
        audit.spec.filters[1],
        SubscriptionsApiFilter::Cesql("source LIKE '/orders%'".into())
    );
    let reference = audit.spec.subscriber.reference.as_ref().unwrap();
    assert_eq!(
        (reference.kind.as_str(), reference.name.as_str()),
        ("Sink", "audit")
    );
    let delivery = audit.spec.delivery.as_ref().unwrap();
    assert_eq!(delivery.retry, Some(0));
    assert_eq!(delivery.timeout, Some(Duration(StdDuration::from_secs(10))));
    assert_eq!(delivery.format, Some(DeliveryFormat::Json));

    assert_eq!(
        config.sinks[&key("shop", "audit")].spec.uri,
        "https://audit.example.com/in"
    );
}

#[test]
fn multi_document_yaml_loads_with_kinds_in_document_order() {
    let text = "---\n# leading separator and comments\n---\napiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: a}\n---\napiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: b, namespace: team}\nspec: {ttl: 16}\n---\n---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {name: t}\nspec:\n  broker: a\n  subscriber: {uri: 'http://x.example/'}\n...\n";
    let resources = parse_text(text, "all.yaml").unwrap();
    let summary: Vec<(&str, &str, &str)> = resources
        .iter()
        .map(|r| {
            let m = r.metadata();
            (r.kind(), m.namespace.as_str(), m.name.as_str())
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("Broker", "default", "a"),
            ("Broker", "team", "b"),
            ("Trigger", "default", "t")
        ]
    );
    let Resource::Broker(b) = &resources[1] else {
        panic!()
    };
    assert_eq!(b.ttl(), 16);
    let config = load_text(text, "all.yaml").unwrap();
    assert_eq!(config.brokers.len(), 2);
    assert_eq!(config.triggers.len(), 1);
}

#[test]
fn json_file_with_an_array_of_resources_loads() {
    let text = r#"[
        {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "metadata": {"name": "b"}},
        {"apiVersion": "switchyard.dev/v1", "kind": "Sink", "metadata": {"name": "s"},
         "spec": {"uri": "http://sink.example/"}}
    ]"#;
    let config = load_text(text, "res.json").unwrap();
    assert!(config.brokers.contains_key(&key("default", "b")));
    assert!(config.sinks.contains_key(&key("default", "s")));
}

/// An error inside a resource: file, resource and field named, and the message contains what.
fn assert_error(
    err: &ConfigError,
    file: &str,
    resource: &str,
    field: Option<&str>,
    message_contains: &str,
) {
    assert_eq!(err.file, file, "{err}");
    assert_eq!(err.resource.as_deref(), Some(resource), "{err}");
    assert_eq!(err.field.as_deref(), field, "{err}");
    assert!(err.message.contains(message_contains), "{err}");
    // The Display form carries all of it.
    let text = err.to_string();
    assert!(text.starts_with(file), "{text}");
    assert!(text.contains(resource), "{text}");
    if let Some(field) = field {
        assert!(text.contains(field), "{text}");
    }
}

const BROKER_HEAD: &str =
    "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata:\n  name: b\n";
const TRIGGER_HEAD: &str =
    "apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata:\n  name: t\n";

#[test]
fn unknown_fields_are_rejected_with_their_path() {
    let cases: &[(String, &str, &str, &str)] = &[
        (
            format!("{BROKER_HEAD}spec:\n  delivery:\n    retries: 3\n"),
            "Broker default/b",
            "spec.delivery",
            "unknown field `retries`",
        ),
        (
            format!("{BROKER_HEAD}specs: {{}}\n"),
            "Broker default/b",
            "specs",
            "unknown field `specs`",
        ),
        (
            format!("{BROKER_HEAD}  nmespace: x\n"),
            "Broker default/b",
            "metadata",
            "unknown field `nmespace`",
        ),
        (
            format!(
                "{TRIGGER_HEAD}spec:\n  broker: b\n  subscriber:\n    uri: http://x.example/\n    url: http://y.example/\n"
            ),
            "Trigger default/t",
            "spec.subscriber",
            "unknown field `url`",
        ),
    ];
    for (text, resource, field_prefix, message) in cases {
        let err = parse_text(text, "res.yaml").unwrap_err();
        assert_eq!(err.file, "res.yaml", "{err}");
        assert_eq!(err.resource.as_deref(), Some(*resource), "{err}");
        let field = err.field.clone().unwrap();
        assert!(field.starts_with(field_prefix), "{err}");
        assert!(err.message.contains(message), "{err}");
    }
}

#[test]
fn unsupported_knative_fields_say_so() {
    let cases: &[(String, &str, &str)] = &[
        (
            format!(
                "{TRIGGER_HEAD}spec:\n  broker: b\n  brokerRef:\n    name: b\n    namespace: other\n  subscriber:\n    uri: http://x.example/\n"
            ),
            "Trigger default/t",
            "spec.brokerRef",
        ),
        (
            format!(
                "{TRIGGER_HEAD}spec:\n  broker: b\n  subscriber:\n    uri: https://x.example/\n    audience: my-audience\n"
            ),
            "Trigger default/t",
            "spec.subscriber.audience",
        ),
    ];
    for (text, resource, field) in cases {
        let err = parse_text(text, "k.yaml").unwrap_err();
        assert_error(&err, "k.yaml", resource, Some(field), "not supported");
    }
}

#[test]
fn cacerts_of_a_destination_must_be_pem_certificates() {
    let with = |ca: &str| {
        format!(
            "{TRIGGER_HEAD}spec:\n  broker: b\n  subscriber:\n    uri: https://x.example/\n    CACerts: '{ca}'\n"
        )
    };
    assert!(
        parse_text(
            &with("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"),
            "k.yaml"
        )
        .is_ok()
    );
    let err = parse_text(&with("not a certificate"), "k.yaml").unwrap_err();
    assert_error(
        &err,
        "k.yaml",
        "Trigger default/t",
        Some("spec.subscriber.CACerts"),
        "PEM certificates",
    );
}

#[test]
fn invalid_resources_are_rejected_with_the_field() {
    let too_long = vec!["a".repeat(63); 4].join(".");
    let too_long_resource = format!("Broker default/{too_long}");
    let cases: &[(String, &str, Option<&str>, &str)] = &[
        (
            "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata:\n  name: My_Broker\n"
                .into(),
            "Broker default/My_Broker",
            Some("metadata.name"),
            "`My_Broker` is not a valid name",
        ),
        (
            "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata:\n  name: b\n  namespace: -x\n"
                .into(),
            "Broker -x/b",
            Some("metadata.namespace"),
            "not a valid name",
        ),
        (
            format!("apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata:\n  name: {}\n", "a".repeat(64)),
            "Broker default/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            Some("metadata.name"),
            "not a valid name",
        ),
        (
            format!("apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata:\n  name: {too_long}\n"),
            &too_long_resource,
            Some("metadata.name"),
            "use at most 253",
        ),
        (
            "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata:\n  name: b\n  namespace: team.a\n"
                .into(),
            "Broker team.a/b",
            Some("metadata.namespace"),
            "`team.a` is not a valid name",
        ),
        (
            format!(
                "{TRIGGER_HEAD}spec:\n  broker: b\n  subscriber:\n    uri: http://x.example/\n    ref:\n      kind: Sink\n      name: s\n"
            ),
            "Trigger default/t",
            Some("spec.subscriber.uri"),
            "with a `ref` the uri is relative",
        ),
        (
            "apiVersion: sources.knative.dev/v1\nkind: PingSource\nmetadata: {name: p}\nspec:\n  schedule: '* * * * *'\n  sink: {uri: 'http://x.example/'}\n  ceOverrides: {extensions: {type: x}}\n".into(),
            "PingSource default/p",
            Some("spec.ceOverrides.extensions.type"),
            "ceOverrides only add extensions",
        ),
        (
            "apiVersion: sources.knative.dev/v1\nkind: PingSource\nmetadata: {name: p}\nspec:\n  schedule: '* * * * *'\n  sink: {uri: 'http://x.example/'}\n  data: a\n  dataBase64: YQ==\n".into(),
            "PingSource default/p",
            Some("spec.dataBase64"),
            "not both",
        ),
        (
            "apiVersion: sources.switchyard.dev/v1\nkind: S3Source\nmetadata: {name: s}\nspec:\n  sink: {uri: 'http://x.example/'}\n  webhook: {}\n  sns: {}\n".into(),
            "S3Source default/s",
            Some("spec"),
            "exactly one of `webhook`, `sns` or `sqs`",
        ),
        (
            "apiVersion: sources.switchyard.dev/v1\nkind: S3Source\nmetadata: {name: s}\nspec:\n  sink: {uri: 'http://x.example/'}\n  sqs: {queueUrl: 'http://q.example/1/q', region: us-east-1, waitTimeSeconds: 30}\n".into(),
            "S3Source default/s",
            Some("spec.sqs.waitTimeSeconds"),
            "1 to 20",
        ),
        (
            "apiVersion: sources.switchyard.dev/v1\nkind: S3Source\nmetadata: {name: s}\nspec:\n  sink: {ref: {kind: Broker, name: x}, uri: /events}\n  webhook: {}\n".into(),
            "S3Source default/s",
            Some("spec.sink.uri"),
            "give no `uri` with it",
        ),
        (
            format!("{TRIGGER_HEAD}spec:\n  broker: b\n  subscriber: {{}}\n"),
            "Trigger default/t",
            Some("spec.subscriber"),
            "give `ref` or `uri`",
        ),
        (
            format!("{TRIGGER_HEAD}spec:\n  broker: b\n  subscriber:\n    uri: ftp://x.example/\n"),
            "Trigger default/t",
            Some("spec.subscriber.uri"),
            "not an absolute http:// or https:// URL",
        ),
        (
            format!(
                "{TRIGGER_HEAD}spec:\n  broker: b\n  subscriber:\n    ref:\n      apiVersion: serving.knative.dev/v1\n      kind: Service\n      name: svc\n    uri: http://svc.example/events\n"
            ),
            "Trigger default/t",
            Some("spec.subscriber.uri"),
            "with a `ref` the uri is relative",
        ),
        (
            format!("{TRIGGER_HEAD}spec:\n  subscriber:\n    uri: http://x.example/\n"),
            "Trigger default/t",
            Some("spec"),
            "missing field `broker`",
        ),
        (
            format!(
                "{TRIGGER_HEAD}spec:\n  broker: b\n  filters:\n    - exact: {{Type: x}}\n  subscriber:\n    uri: http://x.example/\n"
            ),
            "Trigger default/t",
            Some("spec.filters[0].exact.Type"),
            "not a CloudEvents attribute name",
        ),
        (
            format!("{BROKER_HEAD}spec:\n  delivery:\n    retry: -1\n"),
            "Broker default/b",
            Some("spec.delivery.retry"),
            "0 or more",
        ),
        (
            format!("{BROKER_HEAD}spec:\n  delivery:\n    backoffDelay: soon\n"),
            "Broker default/b",
            Some("spec.delivery.backoffDelay"),
            "`soon` is not a duration",
        ),
        (
            format!("{BROKER_HEAD}spec:\n  delivery:\n    jitter: 1.5\n"),
            "Broker default/b",
            Some("spec.delivery.jitter"),
            "fraction",
        ),
    ];
    for (text, resource, field, message) in cases {
        let err = parse_text(text, "bad.yaml").unwrap_err();
        assert_error(&err, "bad.yaml", resource, *field, message);
    }
}

/// Kubernetes checks every custom resource's name as a DNS subdomain, so any kind's name may
/// have dots; a Trigger, a source's sink and an ingress path reach a Broker named so.
#[test]
fn names_are_dns_subdomains_whatever_the_kind() {
    let text = "\
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: orders.v2}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: audit.all}
spec:
  broker: orders.v2
  subscriber: {uri: 'http://audit.example/'}
---
apiVersion: sources.knative.dev/v1
kind: PingSource
metadata: {name: tick.every-minute}
spec:
  schedule: '* * * * *'
  sink: {ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: orders.v2}}
";
    let config = load_text(text, "dots.yaml").unwrap();
    assert!(config.brokers.contains_key(&key("default", "orders.v2")));
    assert_eq!(
        config.triggers[&key("default", "audit.all")].spec.broker,
        "orders.v2"
    );
    assert!(config.not_ready.is_empty(), "{:?}", config.not_ready);
}

/// JetStream does not allow dots in a consumer's name: a NatsSource named with dots gets a
/// default durable with `_` in their place.
#[test]
fn a_dotted_natssource_name_makes_a_valid_durable() {
    let text = "apiVersion: sources.switchyard.dev/v1\nkind: NatsSource\nmetadata: {name: orders.eu}\nspec:\n  servers: ['nats://127.0.0.1:4222']\n  subject: orders\n  jetstream: {stream: ORDERS}\n  sink: {uri: 'http://x.example/'}\n";
    let config = load_text(text, "n.yaml").unwrap();
    let source = &config.nats_sources[&key("default", "orders.eu")];
    assert_eq!(
        source.consumer_name().as_deref(),
        Some("switchyard-default-orders_eu")
    );
}

#[test]
fn unknown_kinds_and_api_versions_are_rejected() {
    let err = parse_text(
        "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\n",
        "w.yaml",
    )
    .unwrap_err();
    assert_error(
        &err,
        "w.yaml",
        "Widget default/w",
        Some("kind"),
        "kind `Widget` (example.com/v1) is not supported",
    );
    assert!(
        err.message.contains("eventing.knative.dev/v1 Broker"),
        "{err}"
    );

    let err = parse_text(
        "apiVersion: eventing.knative.dev/v1alpha1\nkind: Trigger\nmetadata:\n  name: t\n",
        "t.yaml",
    )
    .unwrap_err();
    assert_error(
        &err,
        "t.yaml",
        "Trigger default/t",
        Some("kind"),
        "use `eventing.knative.dev/v1`",
    );

    let err = parse_text("kind: Broker\nmetadata:\n  name: b\n", "b.yaml").unwrap_err();
    assert_error(
        &err,
        "b.yaml",
        "Broker default/b",
        None,
        "`apiVersion` and `kind` are required",
    );

    // A document that is not a mapping: named by its position.
    let err = parse_text(
        "apiVersion: switchyard.dev/v1\nkind: Sink\nmetadata: {name: s}\nspec: {uri: 'http://s.example/'}\n---\n- a list\n",
        "list.yaml",
    )
    .unwrap_err();
    assert_error(
        &err,
        "list.yaml",
        "resource (document 2)",
        None,
        "must be a mapping",
    );
}

#[test]
fn references_to_missing_resources_are_rejected() {
    let broker = "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata:\n  name: b\n";
    let cases: &[(String, &str, &str, &str)] = &[
        (
            format!(
                "{broker}---\n{TRIGGER_HEAD}spec:\n  broker: b\n  subscriber:\n    ref:\n      kind: Sink\n      name: missing\n"
            ),
            "Trigger default/t",
            "spec.subscriber.ref",
            "no Sink `missing` in namespace `default`",
        ),
        (
            format!(
                "{broker}---\n{TRIGGER_HEAD}spec:\n  broker: b\n  subscriber:\n    uri: http://x.example/\n  delivery:\n    deadLetterSink:\n      ref:\n        kind: Sink\n        name: dlq\n        namespace: ops\n"
            ),
            "Trigger default/t",
            "spec.delivery.deadLetterSink.ref",
            "no Sink `dlq` in namespace `ops`",
        ),
        (
            "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata:\n  name: b\nspec:\n  delivery:\n    deadLetterSink:\n      ref:\n        kind: Broker\n        name: dead\n".into(),
            "Broker default/b",
            "spec.delivery.deadLetterSink.ref",
            "no Broker `dead` in namespace `default`",
        ),
    ];
    for (text, resource, field, message) in cases {
        let err = load_text(text, "refs.yaml").unwrap_err();
        assert_error(&err, "refs.yaml", resource, Some(field), message);
    }
}

#[test]
fn duplicate_resources_are_rejected_naming_both_files() {
    let dir = tempfile::tempdir().unwrap();
    let broker = "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata:\n  name: b\n";
    // Written in the opposite order of their names.
    write(dir.path(), "b.yaml", broker);
    write(dir.path(), "a.yaml", broker);
    let err = Config::load(dir.path()).unwrap_err();
    let a = dir.path().join("a.yaml").display().to_string();
    let b = dir.path().join("b.yaml").display().to_string();
    assert_error(
        &err,
        &b,
        "Broker default/b",
        Some("metadata.name"),
        "defined twice",
    );
    assert!(err.message.contains(&format!("first in {a}")), "{err}");

    // In one file as well; the same name in another kind or namespace is no duplicate.
    let text = format!("{broker}---\n{broker}");
    let err = load_text(&text, "one.yaml").unwrap_err();
    assert_error(
        &err,
        "one.yaml",
        "Broker default/b",
        Some("metadata.name"),
        "first in one.yaml",
    );
    let text = format!(
        "{broker}---\n{broker}  namespace: other\n---\napiVersion: switchyard.dev/v1\nkind: Sink\nmetadata:\n  name: b\nspec:\n  uri: http://b.example/\n"
    );
    let config = load_text(&text, "one.yaml").unwrap();
    assert_eq!(config.brokers.len(), 2);
    assert_eq!(config.sinks.len(), 1);
}

#[test]
fn a_directory_loads_its_yaml_and_json_files_in_name_order() {
    let dir = tempfile::tempdir().unwrap();
    // Triggers first in creation order, but after the broker in name order; references are
    // resolved once everything is loaded.
    write(
        dir.path(),
        "30-triggers.yml",
        &format!(
            "{TRIGGER_HEAD}spec:\n  broker: b\n  subscriber:\n    ref:\n      kind: Sink\n      name: s\n"
        ),
    );
    write(
        dir.path(),
        "20-sinks.json",
        r#"{"apiVersion": "switchyard.dev/v1", "kind": "Sink", "metadata": {"name": "s"}, "spec": {"uri": "http://s.example/"}}"#,
    );
    write(
        dir.path(),
        "10-broker.yaml",
        "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata:\n  name: b\n",
    );
    // Not configuration: ignored.
    write(dir.path(), "README.md", "not: [yaml");
    write(dir.path(), "notes.txt", "not: [yaml");
    std::fs::create_dir(dir.path().join("sub.yaml")).unwrap();
    let config = Config::load(dir.path()).unwrap();
    assert_eq!(config.brokers.len(), 1);
    assert_eq!(config.triggers.len(), 1);
    assert_eq!(config.sinks.len(), 1);

    // Name order decides which of two definitions is "first": the later name is the duplicate.
    write(
        dir.path(),
        "00-early.yaml",
        "apiVersion: switchyard.dev/v1\nkind: Sink\nmetadata:\n  name: s\nspec:\n  uri: http://early.example/\n",
    );
    let err = Config::load(dir.path()).unwrap_err();
    assert_eq!(
        err.file,
        dir.path().join("20-sinks.json").display().to_string()
    );
    assert!(
        err.message
            .contains(&dir.path().join("00-early.yaml").display().to_string()),
        "{err}"
    );

    // Loading one file of the directory works too.
    let one = Config::load(&dir.path().join("10-broker.yaml")).unwrap();
    assert_eq!(one.brokers.len(), 1);
}

#[test]
fn unreadable_and_unparsable_files_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.yaml");
    let err = Config::load(&missing).unwrap_err();
    assert_eq!(err.file, missing.display().to_string());
    assert_eq!(
        (err.resource.as_deref(), err.field.as_deref()),
        (None, None)
    );
    assert!(err.message.starts_with("cannot read"), "{err}");

    write(dir.path(), "bad.yaml", "a: [");
    let err = Config::load(dir.path()).unwrap_err();
    assert_eq!(err.file, dir.path().join("bad.yaml").display().to_string());
    assert_eq!(err.resource, None);
    assert!(err.message.starts_with("invalid YAML"), "{err}");

    let err = parse_text("{", "bad.json").unwrap_err();
    assert_eq!(err.file, "bad.json");
    assert!(err.message.starts_with("invalid JSON"), "{err}");
}

#[test]
fn a_uri_sink_adds_a_broker_and_a_trigger_of_the_sources_own() {
    let ping = "apiVersion: sources.knative.dev/v1\nkind: PingSource\nmetadata: {name: beat}\nspec:\n  schedule: '* * * * *'\n  sink: {uri: 'http://fn.example/'}\n";
    let config = load_text(ping, "c.yaml").unwrap();
    let broker = config
        .brokers
        .get(&key("default", "pingsource-beat"))
        .unwrap();
    assert_eq!(
        broker
            .metadata
            .labels
            .get("sources.switchyard.dev/source")
            .map(String::as_str),
        Some("PingSource.beat")
    );
    let trigger = config
        .triggers
        .get(&key("default", "pingsource-beat"))
        .unwrap();
    assert_eq!(trigger.spec.broker, "pingsource-beat");
    assert_eq!(
        trigger.spec.subscriber.uri.as_deref(),
        Some("http://fn.example/")
    );

    // A Broker of that name already defined is a clash, named in the error.
    let clash = format!(
        "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {{name: pingsource-beat}}\n---\n{ping}"
    );
    let err = load_text(&clash, "c.yaml").unwrap_err();
    assert_eq!(err.field.as_deref(), Some("spec.sink.uri"));
    assert!(err.message.contains("pingsource-beat"), "{err}");

    // Sources share /sources/{ns}/{name}: one name, one source, whatever the kinds.
    let twice = format!(
        "{ping}---\napiVersion: sources.switchyard.dev/v1\nkind: S3Source\nmetadata: {{name: beat}}\nspec:\n  sink: {{uri: 'http://fn.example/'}}\n  webhook: {{}}\n"
    );
    let err = load_text(&twice, "c.yaml").unwrap_err();
    assert!(err.message.contains("defined twice"), "{err}");
}

#[test]
fn stream_kinds_load_and_bad_fields_are_named() {
    let ok = format!(
        "{BROKER_HEAD}---\napiVersion: sources.knative.dev/v1beta1\nkind: KafkaSource\nmetadata:\n  name: k\n  labels: {{kafkasources.sources.knative.dev/key-type: int}}\nspec:\n  bootstrapServers: ['127.0.0.1:9092']\n  topics: [orders]\n  sink: {{ref: {{kind: Broker, name: b}}}}\n---\napiVersion: eventing.knative.dev/v1alpha1\nkind: KafkaSink\nmetadata: {{name: out}}\nspec:\n  topic: audit\n  bootstrapServers: ['127.0.0.1:9092']\n---\n{TRIGGER_HEAD}spec:\n  broker: b\n  subscriber: {{ref: {{kind: KafkaSink, name: out}}}}\n  delivery: {{deadLetterSink: {{ref: {{kind: NatsSink, name: dead}}}}}}\n---\napiVersion: switchyard.dev/v1\nkind: NatsSink\nmetadata: {{name: dead}}\nspec:\n  servers: ['nats://127.0.0.1:4222']\n  subject: dead.letters\n"
    );
    let config = load_text(&ok, "streams.yaml").unwrap();
    let k = &config.kafka_sources[&key("default", "k")];
    assert_eq!(k.consumer_group(), "switchyard.default.k");
    assert_eq!(
        k.key_type().unwrap(),
        switchyard_core::streams::KafkaKeyType::Int
    );
    assert_eq!(config.kafka_sinks.len(), 1);
    assert_eq!(config.nats_sinks.len(), 1);

    let cases: &[(String, &str, Option<&str>, &str)] = &[
        (
            "apiVersion: sources.knative.dev/v1beta1\nkind: KafkaSource\nmetadata: {name: k}\nspec:\n  bootstrapServers: ['kafka:9092,other:9092']\n  topics: [t]\n  sink: {uri: 'http://x.example/'}\n".into(),
            "KafkaSource default/k",
            Some("spec.bootstrapServers"),
            "not a `host:port` Kafka broker address",
        ),
        (
            "apiVersion: sources.knative.dev/v1beta1\nkind: KafkaSource\nmetadata:\n  name: k\n  labels: {kafkasources.sources.knative.dev/key-type: uuid}\nspec:\n  bootstrapServers: ['k:9092']\n  topics: [t]\n  sink: {uri: 'http://x.example/'}\n".into(),
            "KafkaSource default/k",
            Some("metadata.labels.kafkasources.sources.knative.dev/key-type"),
            "`uuid` is not a key type",
        ),
        (
            "apiVersion: sources.knative.dev/v1beta1\nkind: KafkaSource\nmetadata: {name: k}\nspec:\n  bootstrapServers: ['k:9092']\n  topics: ['a topic']\n  sink: {uri: 'http://x.example/'}\n".into(),
            "KafkaSource default/k",
            Some("spec.topics"),
            "not a Kafka topic name",
        ),
        (
            "apiVersion: sources.switchyard.dev/v1\nkind: NatsSource\nmetadata: {name: n}\nspec:\n  servers: ['nats://127.0.0.1:4222']\n  subject: 'a.>.b'\n  sink: {uri: 'http://x.example/'}\n".into(),
            "NatsSource default/n",
            Some("spec.subject"),
            "`>` only last",
        ),
        (
            "apiVersion: sources.switchyard.dev/v1\nkind: NatsSource\nmetadata: {name: n}\nspec:\n  servers: ['nats://127.0.0.1:4222']\n  subject: a\n  queueGroup: q\n  jetstream: {stream: S}\n  sink: {uri: 'http://x.example/'}\n".into(),
            "NatsSource default/n",
            Some("spec.queueGroup"),
            "is for core NATS",
        ),
        (
            "apiVersion: sources.switchyard.dev/v1\nkind: MqttSource\nmetadata: {name: m}\nspec:\n  broker: mqtt://127.0.0.1:1883\n  topics: ['a/#/b']\n  sink: {uri: 'http://x.example/'}\n".into(),
            "MqttSource default/m",
            Some("spec.topics"),
            "`#` only as the last level",
        ),
        (
            "apiVersion: sources.switchyard.dev/v1\nkind: MqttSource\nmetadata: {name: m}\nspec:\n  broker: mqtt://127.0.0.1:1883\n  topics: [a]\n  qos: 2\n  sink: {uri: 'http://x.example/'}\n".into(),
            "MqttSource default/m",
            Some("spec.qos"),
            "QoS 2 is not supported",
        ),
        (
            "apiVersion: sources.switchyard.dev/v1\nkind: MqttSource\nmetadata: {name: m}\nspec:\n  broker: http://127.0.0.1:1883\n  topics: [a]\n  sink: {uri: 'http://x.example/'}\n".into(),
            "MqttSource default/m",
            Some("spec.broker"),
            "not an MQTT broker address",
        ),
        (
            "apiVersion: switchyard.dev/v1\nkind: NatsSink\nmetadata: {name: s}\nspec:\n  servers: ['nats://127.0.0.1:4222']\n  subject: 'out.*'\n".into(),
            "NatsSink default/s",
            Some("spec.subject"),
            "without wildcards",
        ),
        (
            "apiVersion: eventing.knative.dev/v1alpha1\nkind: KafkaSink\nmetadata: {name: s}\nspec:\n  topic: t\n  bootstrapServers: ['k:9092']\n  replicationFactor: 3\n".into(),
            "KafkaSink default/s",
            Some("spec.replicationFactor"),
            "give `numPartitions` too",
        ),
        (
            "apiVersion: eventing.knative.dev/v1alpha1\nkind: KafkaSink\nmetadata: {name: s}\nspec:\n  topic: t\n  bootstrapServers: ['k:9092']\n  net: {sasl: {enable: true, user: {value: u}}}\n".into(),
            "KafkaSink default/s",
            Some("spec.net.sasl"),
            "needs `user` and `password`",
        ),
    ];
    for (text, resource, field, message) in cases {
        let err = parse_text(text, "bad.yaml").unwrap_err();
        assert_error(&err, "bad.yaml", resource, *field, message);
    }

    // A ref to a stream sink that does not exist; a Sink and a KafkaSink may not share a name.
    let missing = format!(
        "{BROKER_HEAD}---\n{TRIGGER_HEAD}spec:\n  broker: b\n  subscriber: {{ref: {{kind: NatsSink, name: gone}}}}\n"
    );
    let err = load_text(&missing, "refs.yaml").unwrap_err();
    assert_error(
        &err,
        "refs.yaml",
        "Trigger default/t",
        Some("spec.subscriber.ref"),
        "no NatsSink `gone` in namespace `default`",
    );
    let clash = "apiVersion: switchyard.dev/v1\nkind: Sink\nmetadata: {name: out}\nspec: {uri: 'http://x.example/'}\n---\napiVersion: eventing.knative.dev/v1alpha1\nkind: KafkaSink\nmetadata: {name: out}\nspec:\n  topic: t\n  bootstrapServers: ['k:9092']\n";
    let err = load_text(clash, "clash.yaml").unwrap_err();
    assert_error(
        &err,
        "clash.yaml",
        "KafkaSink default/out",
        Some("metadata.name"),
        "defined twice (first in clash.yaml)",
    );
}

/// The subscriber of Trigger `default/t` in `text` (with a Broker `b`), resolved.
fn subscriber_of(text: &str) -> Result<Target, String> {
    let config =
        load_text(&format!("{BROKER_HEAD}---\n{text}"), "r.yaml").map_err(|e| e.to_string())?;
    let trigger = config
        .triggers
        .get(&key("default", "t"))
        .expect("the trigger");
    config.resolve("default", &trigger.spec.subscriber)
}

fn trigger_to(subscriber: &str) -> String {
    format!("{TRIGGER_HEAD}spec:\n  broker: b\n  subscriber: {subscriber}\n")
}

#[test]
fn refs_resolve_as_knative_resolves_addressables() {
    let url = |s: &str| Ok(Target::Url(s.to_owned()));
    // A Kubernetes Service and a Knative Service: the cluster's DNS name.
    assert_eq!(
        subscriber_of(&trigger_to(
            "{ref: {apiVersion: v1, kind: Service, name: display}}"
        )),
        url("http://display.default.svc.cluster.local")
    );
    assert_eq!(
        subscriber_of(&trigger_to(
            "{ref: {apiVersion: serving.knative.dev/v1, kind: Service, name: fn, namespace: apps}, uri: /events}"
        )),
        url("http://fn.apps.svc.cluster.local/events"),
        "a relative uri resolves against the ref's address"
    );
    // An AddressTable gives any ref a URL, and may set the cluster domain.
    let table = "apiVersion: switchyard.dev/v1\nkind: AddressTable\nmetadata: {name: laptop}\nspec:\n  clusterDomain: corp.internal\n  addresses:\n    - ref: {apiVersion: serving.knative.dev/v1, kind: Service, name: display}\n      url: http://127.0.0.1:9000/fn/\n    - ref: {apiVersion: flows.knative.dev/v1, kind: Sequence, name: steps}\n      url: http://127.0.0.1:9001/\n";
    let with_table = |sub: &str| subscriber_of(&format!("{table}---\n{}", trigger_to(sub)));
    assert_eq!(
        with_table(
            "{ref: {apiVersion: serving.knative.dev/v1, kind: Service, name: display}, uri: hook}"
        ),
        url("http://127.0.0.1:9000/fn/hook")
    );
    assert_eq!(
        with_table("{ref: {apiVersion: flows.knative.dev/v1, kind: Sequence, name: steps}}"),
        url("http://127.0.0.1:9001/")
    );
    assert_eq!(
        with_table("{ref: {apiVersion: v1, kind: Service, name: other}}"),
        url("http://other.default.svc.corp.internal")
    );
    // A ref nothing resolves says what to add.
    let err = subscriber_of(&trigger_to(
        "{ref: {apiVersion: example.com/v1, kind: Widget, name: steps}}",
    ))
    .unwrap_err();
    assert!(
        err.contains(
            "spec.subscriber.ref: nothing gives Widget default/steps (example.com/v1) an address"
        ) && err.contains("AddressTable"),
        "{err}"
    );
    let err = subscriber_of(&trigger_to(
        "{ref: {apiVersion: flows.knative.dev/v1, kind: Sequence, name: gone}}",
    ))
    .unwrap_err();
    assert!(
        err.contains("no Sequence `gone` in namespace `default` (and no AddressTable"),
        "{err}"
    );
    // Two tables cannot both set the cluster domain.
    let second = table
        .replace("name: laptop", "name: other")
        .replace("addresses:", "addresses: []\n  unused:");
    let second = second
        .split("\n  unused:")
        .next()
        .unwrap_or_default()
        .to_owned()
        + "\n";
    let err = load_text(&format!("{table}---\n{second}"), "t.yaml").unwrap_err();
    assert_eq!(err.field.as_deref(), Some("spec.clusterDomain"), "{err}");
}

#[test]
fn a_source_whose_sink_is_a_service_gets_a_broker_and_a_trigger_to_it() {
    let ping = "apiVersion: sources.knative.dev/v1\nkind: PingSource\nmetadata: {name: beat}\nspec:\n  schedule: '* * * * *'\n  sink: {ref: {apiVersion: serving.knative.dev/v1, kind: Service, name: display}}\n";
    let config = load_text(ping, "p.yaml").unwrap();
    assert!(
        config
            .brokers
            .contains_key(&key("default", "pingsource-beat"))
    );
    let trigger = config
        .triggers
        .get(&key("default", "pingsource-beat"))
        .unwrap();
    assert_eq!(
        config.resolve("default", &trigger.spec.subscriber),
        Ok(Target::Url(
            "http://display.default.svc.cluster.local".to_owned()
        ))
    );
    // A sink nothing resolves is the source's error.
    let err = load_text(
        &ping.replace(
            "serving.knative.dev/v1, kind: Service",
            "example.com/v1, kind: Widget",
        ),
        "p.yaml",
    )
    .unwrap_err();
    assert_eq!(
        err.resource.as_deref(),
        Some("PingSource default/beat"),
        "{err}"
    );
    assert_eq!(err.field.as_deref(), Some("spec.sink.ref"), "{err}");
}

#[test]
fn event_type_names_may_have_dots_as_kubernetes_allows() {
    let et = "apiVersion: eventing.knative.dev/v1beta2\nkind: EventType\nmetadata: {name: dev.knative.source.github.push}\nspec: {type: dev.knative.source.github.push}\n";
    let config = load_text(et, "e.yaml").unwrap();
    assert!(
        config
            .event_types
            .contains_key(&key("default", "dev.knative.source.github.push"))
    );
}

#[test]
fn what_kubernetes_would_accept_loads_or_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "knative.yaml",
        r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata:
  name: default
  annotations: {eventing.knative.dev/broker.class: MTChannelBasedBroker}
spec:
  config: {apiVersion: v1, kind: ConfigMap, name: config-br-default-channel}
---
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: empty}
spec: null
---
apiVersion: serving.knative.dev/v1
kind: Service
metadata: {name: event-display}
spec: {template: {spec: {containers: [{image: example/display}]}}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: elsewhere}
spec:
  broker: not-here
  subscriber: {ref: {apiVersion: serving.knative.dev/v1, kind: Service, name: event-display}}
---
apiVersion: sources.knative.dev/v1
kind: KafkaSource
metadata: {name: orders}
spec:
  bootstrapServers: [my-cluster-kafka-bootstrap.kafka:9092]
  topics: [orders]
  sink: {ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}}
---
apiVersion: eventing.knative.dev/v1beta1
kind: EventType
metadata: {name: com.example.order}
spec: {type: com.example.order, broker: default}
"#,
    );
    let config = Config::load(dir.path()).unwrap();
    assert!(
        config.brokers.contains_key(&key("default", "empty")),
        "spec: null is an empty spec"
    );
    assert!(
        config.kafka_sources.contains_key(&key("default", "orders")),
        "KafkaSource v1 loads"
    );
    let et = &config.event_types[&key("default", "com.example.order")];
    assert_eq!(
        et.broker(),
        Some(("default".to_owned(), "default".to_owned())),
        "v1beta1's spec.broker"
    );
    let ignored: Vec<String> = config.ignored.iter().map(ToString::to_string).collect();
    assert_eq!(ignored.len(), 3, "{ignored:#?}");
    assert!(
        ignored[0]
            .contains("Broker default/default: spec.config: ignored: broker-class configuration")
    );
    assert!(ignored[1].contains("metadata.annotations.eventing.knative.dev/broker.class: ignored"));
    assert!(ignored[2].contains("Service default/event-display: ignored: Knative Serving"));
    assert_eq!(config.not_ready.len(), 1);
    assert_eq!(config.not_ready[0].field.as_deref(), Some("spec.broker"));
    assert!(config.not_ready[0].message.contains("BrokerDoesNotExist"));

    // A source whose Broker is not in the configuration loads not ready and does not run.
    let ping = "apiVersion: sources.knative.dev/v1\nkind: PingSource\nmetadata: {name: beat, namespace: elsewhere}\nspec:\n  schedule: '* * * * *'\n  sink: {ref: {kind: Broker, name: default}}\n";
    let config = load_text(ping, "p.yaml").unwrap();
    assert!(config.ping_sources.is_empty());
    assert_eq!(config.not_ready.len(), 1);
    assert_eq!(
        config.not_ready[0].resource.as_deref(),
        Some("PingSource elsewhere/beat")
    );
    assert!(
        config.not_ready[0]
            .message
            .contains("no Broker `default` in namespace `elsewhere`")
    );

    // Knative kinds Switchyard does not run are refused with the reason.
    let err = load_text(
        "apiVersion: sources.knative.dev/v1\nkind: ContainerSource\nmetadata: {name: c}\nspec: {}\n",
        "c.yaml",
    )
    .unwrap_err();
    assert!(
        err.message
            .contains("ContainerSource is not supported: it runs a container"),
        "{err}"
    );
}

#[test]
fn a_flow_step_that_does_not_resolve_is_the_flows_error() {
    let seq = "apiVersion: flows.knative.dev/v1\nkind: Sequence\nmetadata: {name: s}\nspec:\n  steps:\n    - uri: http://127.0.0.1:9001/\n    - ref: {kind: Sink, name: missing}\n";
    let err = load_text(seq, "s.yaml").unwrap_err();
    assert_eq!(err.resource.as_deref(), Some("Sequence default/s"), "{err}");
    assert_eq!(err.field.as_deref(), Some("spec.steps[1].ref"), "{err}");
    assert!(err.message.contains("no Sink `missing`"), "{err}");

    let par = "apiVersion: flows.knative.dev/v1\nkind: Parallel\nmetadata: {name: p}\nspec:\n  branches:\n    - filter: {ref: {kind: Sink, name: gone}}\n      subscriber: {uri: http://127.0.0.1:9002/}\n";
    let err = load_text(par, "p.yaml").unwrap_err();
    assert_eq!(err.resource.as_deref(), Some("Parallel default/p"), "{err}");
    assert_eq!(
        err.field.as_deref(),
        Some("spec.branches[0].filter.ref"),
        "{err}"
    );
}
