//! Prometheus metrics, named in the spirit of Knative's `event_count` and
//! `event_dispatch_latencies`. The names are listed in `spec/metrics.md`.

use std::collections::{HashMap, HashSet};
use std::sync::{LazyLock, OnceLock, RwLock};

use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Events that reached ingress, by namespace, broker, event type and response code.
pub const EVENT_COUNT: &str = "switchyard_event_count_total";
/// Requests ingress refused before any event could be read, by reason.
pub const INGRESS_REJECTED: &str = "switchyard_ingress_rejected_total";
/// Time from the request's arrival to its answer, by broker and response code.
pub const INGRESS_LATENCY: &str = "switchyard_ingress_latency_seconds";
/// Events per commit of the store.
pub const COMMIT_BATCH_EVENTS: &str = "switchyard_store_commit_batch_events";
/// Duration of each commit of the store (including the write-ahead log's fsync).
pub const COMMIT_SECONDS: &str = "switchyard_store_commit_seconds";
/// Duration of each `fdatasync` of the write-ahead log (one per commit).
pub const FSYNC_SECONDS: &str = "switchyard_store_fsync_seconds";
/// Bytes of the store's files (the embedded store), sampled when `/metrics` is read.
pub const STORE_BYTES: &str = "switchyard_store_bytes";
/// Bytes free for the server on the store's file system, sampled when `/metrics` is read.
pub const STORE_DISK_FREE_BYTES: &str = "switchyard_store_disk_free_bytes";
/// The size of the store's file system, sampled when `/metrics` is read.
pub const STORE_DISK_SIZE_BYTES: &str = "switchyard_store_disk_size_bytes";
/// Duration of each checkpoint of the store (redb's durable commit).
pub const CHECKPOINT_SECONDS: &str = "switchyard_store_checkpoint_seconds";
/// Time each append request waited for the store's writer to start its commit.
pub const APPEND_QUEUE_SECONDS: &str = "switchyard_store_append_queue_seconds";
/// Time ingress waited for the store to answer an append: the queue wait, the commit, and
/// the time until the request's task ran again.
pub const INGRESS_APPEND_SECONDS: &str = "switchyard_ingress_append_seconds";
/// Append requests waiting for the store's writer.
pub const WRITER_QUEUE_DEPTH: &str = "switchyard_store_writer_queue_depth";

/// Validations of event data against an EventType's schema, by broker, event type and
/// `result` (`passed`, `failed`).
pub const SCHEMA_VALIDATIONS: &str = "switchyard_schema_validations_total";

/// Delivery attempts, by namespace, broker, trigger and response code (`timeout` and
/// `connection_error` when no answer came).
pub const DELIVERY_COUNT: &str = "switchyard_delivery_count_total";
/// Duration of each delivery attempt, by trigger.
pub const DELIVERY_LATENCY: &str = "switchyard_delivery_latency_seconds";
/// From an event's arrival at its broker to the answer of the attempt that delivered it,
/// retries included, by trigger.
pub const DELIVERY_E2E_LATENCY: &str = "switchyard_delivery_e2e_latency_seconds";
/// Retries scheduled, by trigger.
pub const DELIVERY_RETRIES: &str = "switchyard_delivery_retries_total";
/// Events dead-lettered, by trigger and reason.
pub const DEAD_LETTERS: &str = "switchyard_deadletters_total";
/// Events a trigger still owes its subscriber (queued, in flight, waiting for a retry).
pub const TRIGGER_LAG: &str = "switchyard_trigger_lag_events";
/// How long ago the oldest event a trigger still owes its subscriber arrived (0 when it owes
/// none), sampled every 5 seconds.
pub const TRIGGER_OLDEST_UNDELIVERED_AGE: &str =
    "switchyard_trigger_oldest_undelivered_age_seconds";
/// 1 while a trigger's last delivery attempt delivered (or none was made yet), 0 after one
/// that failed.
pub const SUBSCRIBER_HEALTHY: &str = "switchyard_subscriber_healthy";
/// Reply events dropped because their TTL ran out, by trigger.
pub const REPLIES_DROPPED: &str = "switchyard_replies_dropped_total";

/// Events sources stored in their broker, by source `kind` and `source` (`namespace/name`).
pub const SOURCE_EVENTS: &str = "switchyard_source_events_total";
/// Notifications or messages a source could not read (malformed), by `kind`, `source` and
/// what was done with them (`action`: `rejected` for a 4xx answer, `moved` to a dead-letter
/// queue, `kept` in the queue for its redrive policy, `skipped` past in a Kafka topic,
/// `terminated` in JetStream, `dropped` for core NATS and MQTT).
pub const SOURCE_MALFORMED: &str = "switchyard_source_malformed_total";

/// Always 1, labelled with the server's `version`: which build runs, for dashboards and
/// for joining onto other series.
pub const BUILD_INFO: &str = "switchyard_build_info";
/// Reloads of the configuration, by `result` (`applied`, `unchanged`, `partly_applied`,
/// `refused`).
pub const CONFIG_RELOADS: &str = "switchyard_config_reloads_total";
/// The configuration's generation in force: 1 at start, one more per reload applied.
pub const CONFIG_GENERATION: &str = "switchyard_config_generation";
/// 1 when the last reload was taken whole (or there was none yet), 0 when it was refused or
/// only partly applied (`/readyz` then says why).
pub const CONFIG_LAST_RELOAD_SUCCESSFUL: &str = "switchyard_config_last_reload_successful";
/// When a configuration was last taken whole or found unchanged, in seconds since the epoch.
pub const CONFIG_LAST_RELOAD_SUCCESS_TIMESTAMP: &str =
    "switchyard_config_last_reload_success_timestamp_seconds";

/// Distinct `event_type` label values per broker; events of later types are counted under
/// [`OTHER_EVENT_TYPE`].
pub const MAX_EVENT_TYPE_LABELS: usize = 100;
/// Longest `event_type` label value, in bytes; a longer type is counted under
/// [`OTHER_EVENT_TYPE`].
pub const MAX_EVENT_TYPE_LABEL_BYTES: usize = 128;
/// The `event_type` label of every type beyond the caps.
pub const OTHER_EVENT_TYPE: &str = "(other)";

/// Event types given a label of their own, per broker.
static EVENT_TYPE_LABELS: LazyLock<RwLock<HashMap<String, HashSet<String>>>> =
    LazyLock::new(Default::default);

/// The `event_type` label for an event of type `ty` counted at `broker`'s ingress. `event_type`
/// comes from producers, so the labels are capped: the first [`MAX_EVENT_TYPE_LABELS`] types
/// the broker stored, each at most [`MAX_EVENT_TYPE_LABEL_BYTES`] long, get a label of their
/// own; every other type is [`OTHER_EVENT_TYPE`]. Only a `stored` event adds a label: a refused
/// one keeps its type's label if it has one, and is `(other)` if not.
pub fn event_type_label(broker: &str, ty: &str, stored: bool) -> String {
    if ty.is_empty() {
        return String::new();
    }
    if ty.len() > MAX_EVENT_TYPE_LABEL_BYTES {
        return OTHER_EVENT_TYPE.to_owned();
    }
    let known = EVENT_TYPE_LABELS
        .read()
        .ok()
        .and_then(|m| m.get(broker).map(|types| types.contains(ty)));
    match known {
        Some(true) => return ty.to_owned(),
        _ if !stored => return OTHER_EVENT_TYPE.to_owned(),
        _ => {}
    }
    let Ok(mut labels) = EVENT_TYPE_LABELS.write() else {
        return OTHER_EVENT_TYPE.to_owned();
    };
    let types = labels.entry(broker.to_owned()).or_default();
    if types.contains(ty) || types.len() < MAX_EVENT_TYPE_LABELS {
        types.insert(ty.to_owned());
        ty.to_owned()
    } else {
        OTHER_EVENT_TYPE.to_owned()
    }
}

/// Metric handles of one series family, by broker and a key (an event type), for the
/// per-event and per-request hot path: a counted event costs two map look-ups and an atomic
/// add instead of its labels built and its series found in the recorder. A miss registers the
/// series and says whether to keep it: only series whose labels are bounded (an event type
/// with a label of its own, at most [`MAX_EVENT_TYPE_LABELS`] per broker), and only once
/// [`install`] has run: the recorder has no idle timeout, so a handle stays its series' for
/// the life of the process, while one taken before the recorder would count nowhere.
struct Handles<H>(LazyLock<RwLock<HashMap<String, HashMap<String, H>>>>);

impl<H: Clone> Handles<H> {
    const fn new() -> Self {
        Handles(LazyLock::new(Default::default))
    }

    /// The handle kept for (`broker`, `key`), or the one `miss` registers (kept when it says
    /// so).
    fn get(&self, broker: &str, key: &str, miss: impl FnOnce() -> (H, bool)) -> H {
        if let Ok(known) = self.0.read()
            && let Some(handle) = known.get(broker).and_then(|keys| keys.get(key))
        {
            return handle.clone();
        }
        let (handle, keep) = miss();
        if keep
            && HANDLE.get().is_some()
            && let Ok(mut known) = self.0.write()
        {
            known
                .entry(broker.to_owned())
                .or_default()
                .entry(key.to_owned())
                .or_insert_with(|| handle.clone());
        }
        handle
    }

    /// [`get`](Self::get) for a series labelled with event type `ty`: a miss registers the
    /// series of its label (from [`event_type_label`] with `stored`), kept when the label is
    /// the type's own.
    fn typed(&self, broker: &str, ty: &str, stored: bool, register: impl FnOnce(String) -> H) -> H {
        self.get(broker, ty, || {
            let label = event_type_label(broker, ty, stored);
            let own = !ty.is_empty() && label == ty;
            (register(label), own)
        })
    }
}

static ACCEPTED_EVENTS: Handles<Counter> = Handles::new();
static VALIDATIONS_PASSED: Handles<Counter> = Handles::new();
static VALIDATIONS_FAILED: Handles<Counter> = Handles::new();
/// [`INGRESS_LATENCY`]'s series of answers 202, by broker (its key is empty).
static ACCEPTED_LATENCY: Handles<Histogram> = Handles::new();

/// Counts an event of type `ty` accepted (202) at `broker` (`namespace/name`) in
/// [`EVENT_COUNT`].
pub fn count_accepted_event(broker: &str, (namespace, name): (&str, &str), ty: &str) {
    ACCEPTED_EVENTS
        .typed(broker, ty, true, |label| {
            metrics::counter!(
                EVENT_COUNT,
                "namespace_name" => namespace.to_owned(),
                "broker_name" => name.to_owned(),
                "event_type" => label,
                "response_code" => "202"
            )
        })
        .increment(1);
}

/// Counts a validation of an event of type `ty` at `broker` in [`SCHEMA_VALIDATIONS`];
/// `stored` as for [`event_type_label`].
pub fn count_validation(
    broker: &str,
    (namespace, name): (&str, &str),
    ty: &str,
    passed: bool,
    stored: bool,
) {
    let (counters, result) = if passed {
        (&VALIDATIONS_PASSED, "passed")
    } else {
        (&VALIDATIONS_FAILED, "failed")
    };
    counters
        .typed(broker, ty, stored, |label| {
            metrics::counter!(
                SCHEMA_VALIDATIONS,
                "namespace_name" => namespace.to_owned(),
                "broker_name" => name.to_owned(),
                "event_type" => label,
                "result" => result
            )
        })
        .increment(1);
}

/// The [`INGRESS_LATENCY`] series of `broker` (`namespace/name`) for answers `code`.
pub fn ingress_latency(broker: &str, (namespace, name): (&str, &str), code: &str) -> Histogram {
    let register = || {
        metrics::histogram!(
            INGRESS_LATENCY,
            "namespace_name" => namespace.to_owned(),
            "broker_name" => name.to_owned(),
            "response_code" => code.to_owned()
        )
    };
    if code != "202" {
        return register();
    }
    ACCEPTED_LATENCY.get(broker, "", || (register(), true))
}

/// What kind of series a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations in buckets.
    Histogram,
}

/// Every metric the server exports, with its kind and its help text (`# HELP`). The full
/// meaning of each, and its labels, is in `spec/metrics.md`, which a test holds to this list.
pub const ALL: &[(&str, Kind, &str)] = &[
    (
        EVENT_COUNT,
        Kind::Counter,
        "Events that reached a broker's ingress, by the answer they got.",
    ),
    (
        INGRESS_REJECTED,
        Kind::Counter,
        "Requests refused before a broker was found, by reason.",
    ),
    (
        INGRESS_LATENCY,
        Kind::Histogram,
        "From a request's arrival at ingress to its answer (for 202: the commit included).",
    ),
    (
        SCHEMA_VALIDATIONS,
        Kind::Counter,
        "Validations of event data against its EventType's schema, by result.",
    ),
    (
        COMMIT_BATCH_EVENTS,
        Kind::Histogram,
        "Events per commit of the store (group-commit batch size).",
    ),
    (
        COMMIT_SECONDS,
        Kind::Histogram,
        "Duration of each commit of the store, the write-ahead log's fdatasync included.",
    ),
    (
        FSYNC_SECONDS,
        Kind::Histogram,
        "Duration of each fdatasync of a write-ahead log record.",
    ),
    (
        CHECKPOINT_SECONDS,
        Kind::Histogram,
        "Duration of each checkpoint of the store (its file made durable).",
    ),
    (
        APPEND_QUEUE_SECONDS,
        Kind::Histogram,
        "Time an append request waited for the store's writer to start its commit.",
    ),
    (
        INGRESS_APPEND_SECONDS,
        Kind::Histogram,
        "Time an accepted ingress request waited for the store's answer.",
    ),
    (
        WRITER_QUEUE_DEPTH,
        Kind::Gauge,
        "Append requests waiting for the store's writer.",
    ),
    (
        STORE_BYTES,
        Kind::Gauge,
        "Bytes the embedded store's files take on disk.",
    ),
    (
        STORE_DISK_FREE_BYTES,
        Kind::Gauge,
        "Bytes free for the server on the data directory's file system.",
    ),
    (
        STORE_DISK_SIZE_BYTES,
        Kind::Gauge,
        "Size of the data directory's file system, in bytes.",
    ),
    (
        DELIVERY_COUNT,
        Kind::Counter,
        "Delivery attempts, by response code and outcome (delivered, retryable, not_retryable, held).",
    ),
    (
        DELIVERY_LATENCY,
        Kind::Histogram,
        "Duration of each delivery attempt.",
    ),
    (
        DELIVERY_E2E_LATENCY,
        Kind::Histogram,
        "From an event's arrival at its broker to the answer that delivered it, retries included.",
    ),
    (DELIVERY_RETRIES, Kind::Counter, "Retries scheduled."),
    (
        DEAD_LETTERS,
        Kind::Counter,
        "Events dead-lettered, by reason.",
    ),
    (
        TRIGGER_LAG,
        Kind::Gauge,
        "Events a trigger still owes its subscriber: queued, in flight or waiting for a retry.",
    ),
    (
        TRIGGER_OLDEST_UNDELIVERED_AGE,
        Kind::Gauge,
        "How long ago the oldest event a trigger still owes its subscriber arrived (0: none owed).",
    ),
    (
        SUBSCRIBER_HEALTHY,
        Kind::Gauge,
        "1 while a trigger's last delivery attempt delivered (or none was made), 0 after one failed.",
    ),
    (
        REPLIES_DROPPED,
        Kind::Counter,
        "Reply events dropped because their TTL ran out (a reply loop).",
    ),
    (
        SOURCE_EVENTS,
        Kind::Counter,
        "Events a source stored in its broker.",
    ),
    (
        SOURCE_MALFORMED,
        Kind::Counter,
        "Notifications or messages a source could not read, by what became of them.",
    ),
    (
        BUILD_INFO,
        Kind::Gauge,
        "Always 1, labelled with the version of the build that runs.",
    ),
    (
        CONFIG_RELOADS,
        Kind::Counter,
        "Reloads of the configuration, by result (applied, unchanged, partly_applied, refused).",
    ),
    (
        CONFIG_GENERATION,
        Kind::Gauge,
        "The configuration's generation in force: 1 at start, one more per reload applied.",
    ),
    (
        CONFIG_LAST_RELOAD_SUCCESSFUL,
        Kind::Gauge,
        "1 while the configuration in force is the one on disk, 0 after a reload refused or partly applied.",
    ),
    (
        CONFIG_LAST_RELOAD_SUCCESS_TIMESTAMP,
        Kind::Gauge,
        "When a configuration was last taken whole, in seconds since the epoch.",
    ),
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder (once) and returns the handle that renders it. Without
/// an idle timeout: the hot path keeps handles to its series (see `TypeCounters`), which a
/// timeout would detach from what `/metrics` renders.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("_seconds".into()),
                    &[
                        0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
                    ],
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(COMMIT_BATCH_EVENTS.into()),
                        &[
                            1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
                            4096.0,
                        ],
                    )
                })
                .and_then(|b| {
                    // Retries and redrives included: seconds to an hour.
                    b.set_buckets_for_metric(
                        Matcher::Full(DELIVERY_E2E_LATENCY.into()),
                        &[
                            0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0,
                            900.0, 3600.0,
                        ],
                    )
                })
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
            }
            for (name, kind, help) in ALL {
                match kind {
                    Kind::Counter => metrics::describe_counter!(*name, *help),
                    Kind::Gauge => metrics::describe_gauge!(*name, *help),
                    Kind::Histogram => metrics::describe_histogram!(*name, *help),
                }
            }
            metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            handle
        })
        .clone()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// `spec/metrics.md` documents exactly the metrics the server exports.
    #[test]
    fn the_spec_lists_every_metric_and_no_other() {
        let spec = include_str!("../../spec/metrics.md");
        let documented: HashSet<&str> = spec
            .lines()
            .filter_map(|l| l.strip_prefix("| `switchyard_"))
            .filter_map(|l| l.split('`').next())
            .collect();
        let exported: HashSet<&str> = ALL
            .iter()
            .map(|(n, _, _)| n.strip_prefix("switchyard_").unwrap())
            .collect();
        assert_eq!(documented, exported);
        // The counters' names end in _total, as Prometheus's conventions want.
        for (name, kind, _) in ALL {
            assert_eq!(name.ends_with("_total"), *kind == Kind::Counter, "{name}");
        }
    }

    #[test]
    fn event_type_labels_are_capped_per_broker_and_refused_events_add_none() {
        let b = "caps/test";
        assert_eq!(
            event_type_label(b, "refused.first", false),
            OTHER_EVENT_TYPE
        );
        for i in 0..MAX_EVENT_TYPE_LABELS {
            let ty = format!("t{i}");
            assert_eq!(event_type_label(b, &ty, true), ty);
        }
        assert_eq!(event_type_label(b, "one.too.many", true), OTHER_EVENT_TYPE);
        assert_eq!(
            event_type_label(b, "t7", false),
            "t7",
            "a known type keeps its label"
        );
        assert_eq!(event_type_label(b, "refused.first", true), OTHER_EVENT_TYPE);
        let long = "x".repeat(MAX_EVENT_TYPE_LABEL_BYTES + 1);
        assert_eq!(
            event_type_label("caps/other", &long, true),
            OTHER_EVENT_TYPE
        );
        assert_eq!(
            event_type_label("caps/other", "t1", true),
            "t1",
            "per broker"
        );
        assert_eq!(event_type_label(b, "", true), "");
    }
}
