//! One trigger at run time, as the delivery core sees it: what it was configured with
//! (resolved at load), its bound on deliveries in flight, the broker's reply policy, and its
//! metrics. Where its work comes from is its delivery source's (`source.rs`); the loop that
//! delivers it is `deliver.rs`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use switchyard_broker::eventtypes::EventTypePolicy;
use switchyard_broker::metrics as m;
use switchyard_core::config::Config;
use switchyard_core::id::TriggerId;
use switchyard_core::resources::ARRIVAL_EXTENSION;
use switchyard_core::resources::{
    BatchSpec, Broker, Destination, Ordering as TriggerOrdering, ReplyTo, Target, Trigger,
};
use switchyard_core::{CloudEvent, ExtValue};
use tokio::sync::Semaphore;

use super::{DEFAULT_MAX_IN_FLIGHT, DispatchError, lock};
use crate::delivery::{AttemptResult, Deliverer, DeliverySettings, Subscriber, Verdict};
use crate::streams::StreamSinks;

/// A trigger's configuration, resolved once at start.
#[derive(Debug)]
pub(crate) struct TriggerConfig {
    /// Where events go.
    pub subscriber: Subscriber,
    /// Where dead letters also go, if anywhere.
    pub dead_letter_sink: Option<Subscriber>,
    /// Retries, backoff, timeout, format.
    pub settings: DeliverySettings,
    /// Ordered per `partitionkey` (retried in place), or unordered.
    pub ordered: bool,
    /// At most this many deliveries started per second.
    pub rate_limit: Option<f64>,
    /// Several waiting events to a request (an ordered trigger's, to an HTTP subscriber).
    pub batch: Option<Batch>,
}

/// How an ordered trigger batches the events waiting behind a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Batch {
    /// The most events in one request.
    pub max_events: usize,
    /// The most bytes of one request's body.
    pub max_bytes: usize,
}

/// Metric handles, looked up once (labels are fixed per trigger).
struct TriggerMetrics {
    labels: Vec<metrics::Label>,
    latency: metrics::Histogram,
    /// Arrival to delivery, per delivered event.
    e2e: metrics::Histogram,
    /// Attempts by outcome, then response code (looked up without allocating).
    attempts: Mutex<HashMap<&'static str, HashMap<String, metrics::Counter>>>,
    /// Whether the last attempt delivered.
    healthy: metrics::Gauge,
}

/// One trigger at run time.
pub struct TriggerRuntime {
    /// The trigger (its broker is in the same namespace).
    pub id: TriggerId,
    /// Its broker's id, `namespace/name`.
    pub(super) broker: Arc<str>,
    /// The broker its replies are stored in: its own, or for the Triggers a flow adds the
    /// next step's (`None`: replies are dropped, a flow without `reply`).
    pub(super) reply_broker: Option<Arc<str>>,
    pub(super) config: TriggerConfig,
    /// Deliveries in flight, across first attempts and retries.
    pub(super) slots: Arc<Semaphore>,
    /// Under a `rateLimit`, when the next first delivery may start: shared by every loop
    /// that delivers for the trigger (a JetStream ordered trigger has one per partition).
    pacing: Mutex<Option<tokio::time::Instant>>,
    pub(super) deliverer: Deliverer,
    /// The broker's `eventTypes`, which replies are held to.
    pub(super) event_types: Arc<EventTypePolicy>,
    metrics: TriggerMetrics,
    /// Its recent attempts, for its status (kept across reloads).
    pub health: Arc<super::health::Health>,
    /// Whether its subscriber is down (`down.rs`).
    pub(super) down: Arc<super::down::Down>,
    /// Whether it is paused (kept across reloads, and in the store across restarts).
    pub pause: Arc<super::pause::Pause>,
}

impl TriggerRuntime {
    /// The HTTP URLs it delivers to: its subscriber's and its dead-letter sink's.
    pub fn destination_urls(&self) -> impl Iterator<Item = &str> {
        [
            Some(&self.config.subscriber),
            self.config.dead_letter_sink.as_ref(),
        ]
        .into_iter()
        .flatten()
        .filter_map(|s| match s {
            Subscriber::Http(target) => Some(target.as_str()),
            Subscriber::Stream { .. } => None,
        })
    }
}

impl std::fmt::Debug for TriggerRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TriggerRuntime")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Everything a trigger is built from besides its own resource.
pub(super) struct Context<'a> {
    pub config: &'a Config,
    pub event_types: &'a Arc<EventTypePolicy>,
    pub log: &'a Arc<dyn switchyard_broker::log::EventLog>,
    /// Where subscribers may be (`--deny-internal-destinations`).
    pub egress: &'a switchyard_core::egress::EgressPolicy,
    pub streams: &'a StreamSinks,
}

/// The address a destination resolves to ([`Config::resolve`]): a Broker's
/// ([`crate::streams::broker_address`]), a stream sink's, or an HTTP URL. The configuration
/// checked every destination when it loaded, so an unresolvable one here is empty and
/// refused by [`Subscriber::resolve`].
fn address(dest: &Destination, ns: &str, config: &Config) -> String {
    match config.resolve(ns, dest) {
        Ok(Target::Broker { namespace, name }) => crate::streams::broker_address(&namespace, &name),
        Ok(Target::Stream {
            kind,
            namespace,
            name,
        }) => crate::streams::address(&kind, &namespace, &name),
        Ok(Target::Url(url)) => url,
        Err(_) => String::new(),
    }
}

/// What a trigger at run time is built from, besides the brokers' `eventTypes` and the
/// stream sinks' writers: equal inputs build an equal runtime, so a reload keeps it running.
#[derive(Debug, PartialEq)]
pub(super) struct Inputs {
    trigger: Trigger,
    broker: Option<Broker>,
    /// Where its destinations resolve to.
    addresses: Vec<String>,
    /// The TTL of each destination that is a Broker (its events get it when they have none).
    target_ttls: Vec<i32>,
}

impl Inputs {
    /// Whether one of the trigger's destinations is a stream sink in `sinks` (addresses).
    pub fn uses_any(&self, sinks: &std::collections::HashSet<String>) -> bool {
        self.addresses.iter().any(|a| sinks.contains(a))
    }
}

impl Context<'_> {
    /// The inputs of trigger `ns/name`.
    pub fn inputs(&self, ns: &str, trigger: &Trigger) -> Inputs {
        let broker = self
            .config
            .brokers
            .get(&(ns.to_owned(), trigger.spec.broker.clone()))
            .cloned();
        let delivery = trigger
            .spec
            .delivery
            .as_ref()
            .or(broker.as_ref().and_then(|b| b.spec.delivery.as_ref()));
        let destinations: Vec<&Destination> = std::iter::once(&trigger.spec.subscriber)
            .chain(delivery.and_then(|d| d.dead_letter_sink.as_ref()))
            .collect();
        let addresses = destinations
            .iter()
            .map(|d| address(d, ns, self.config))
            .collect();
        let target_ttls = destinations
            .iter()
            .filter_map(|d| match self.config.resolve(ns, d) {
                Ok(Target::Broker { namespace, name }) => {
                    self.config.brokers.get(&(namespace, name)).map(Broker::ttl)
                }
                _ => None,
            })
            .collect();
        Inputs {
            trigger: trigger.clone(),
            broker,
            addresses,
            target_ttls,
        }
    }

    /// Where `dest`, a destination of trigger `ns/name`, sends events.
    fn subscriber(
        &self,
        dest: &Destination,
        ns: &str,
        name: &str,
    ) -> Result<Subscriber, DispatchError> {
        let address = address(dest, ns, self.config);
        if dest.ca_certs.is_none() {
            crate::delivery::needs_trust_roots("the destination", &address).map_err(|message| {
                DispatchError::HttpClient {
                    trigger: TriggerId::new(ns, name),
                    message,
                }
            })?;
        }
        if let Ok(Target::Broker {
            namespace,
            name: broker,
        }) = self.config.resolve(ns, dest)
        {
            let ttl = self
                .config
                .brokers
                .get(&(namespace.clone(), broker.clone()))
                .map_or(switchyard_core::resources::DEFAULT_BROKER_TTL, |b| b.ttl());
            let appender = switchyard_broker::append::Appender::new(
                Arc::clone(self.log),
                Arc::clone(self.event_types),
            );
            return Ok(Subscriber::Stream {
                address,
                sink: Arc::new(crate::streams::BrokerSink::new(
                    appender,
                    switchyard_core::id::join(&namespace, &broker),
                    ttl,
                )),
            });
        }
        Subscriber::resolve(address.clone(), self.streams).ok_or_else(|| {
            DispatchError::NoStreamSink {
                trigger: TriggerId::new(ns, name),
                address,
            }
        })
    }
}

impl TriggerRuntime {
    /// The runtime of trigger `ns/name`: its destinations resolved, its settings merged with
    /// its broker's.
    pub(super) fn build(
        cx: &Context<'_>,
        ns: &str,
        name: &str,
        trigger: &Trigger,
    ) -> Result<TriggerRuntime, DispatchError> {
        let broker_name = &trigger.spec.broker;
        let broker = &cx.config.brokers[&(ns.to_owned(), broker_name.clone())];
        let delivery = trigger
            .spec
            .delivery
            .as_ref()
            .or(broker.spec.delivery.as_ref());
        let config = TriggerConfig {
            subscriber: cx.subscriber(&trigger.spec.subscriber, ns, name)?,
            dead_letter_sink: delivery
                .and_then(|d| d.dead_letter_sink.as_ref())
                .map(|d| cx.subscriber(d, ns, name))
                .transpose()?,
            settings: DeliverySettings::resolve(delivery),
            ordered: trigger.spec.ordering == Some(TriggerOrdering::Ordered),
            rate_limit: trigger.spec.rate_limit,
            batch: None,
        };
        // A batch goes to an HTTP subscriber in one request; a stream sink takes events one
        // by one (its writer batches on its own).
        let batch = trigger
            .spec
            .batch
            .filter(|b| b.max_events > 1 && matches!(config.subscriber, Subscriber::Http(_)))
            .map(|b| Batch {
                max_events: b.max_events as usize,
                max_bytes: usize::try_from(b.max_bytes.unwrap_or(BatchSpec::DEFAULT_MAX_BYTES))
                    .unwrap_or(usize::MAX),
            });
        let config = TriggerConfig { batch, ..config };
        let labels = vec![
            metrics::Label::new("namespace_name", ns.to_owned()),
            metrics::Label::new("broker_name", broker_name.clone()),
            metrics::Label::new("trigger_name", name.to_owned()),
        ];
        let own: Arc<str> = Arc::from(switchyard_core::id::join(ns, broker_name));
        let reply_broker = match &trigger.spec.reply {
            None => Some(Arc::clone(&own)),
            Some(ReplyTo::Broker(rns, rname)) => {
                Some(Arc::from(switchyard_core::id::join(rns, rname)))
            }
            Some(ReplyTo::Discard) => None,
        };
        let health = super::health::Health::of(&TriggerId::new(ns, name));
        let connect_timeout = config.settings.connect_timeout();
        Ok(TriggerRuntime {
            id: TriggerId::new(ns, name),
            broker: own,
            reply_broker,
            config,
            slots: Arc::new(Semaphore::new(
                trigger.spec.max_in_flight.unwrap_or(DEFAULT_MAX_IN_FLIGHT) as usize,
            )),
            pacing: Mutex::new(None),
            deliverer: Deliverer::new(
                &std::iter::once(&trigger.spec.subscriber)
                    .chain(delivery.and_then(|d| d.dead_letter_sink.as_ref()))
                    .filter_map(|d| d.ca_certs.as_deref())
                    .collect::<Vec<_>>(),
                cx.egress,
                connect_timeout,
            )
            .map_err(|message| DispatchError::HttpClient {
                trigger: TriggerId::new(ns, name),
                message,
            })?,
            event_types: Arc::clone(cx.event_types),
            metrics: TriggerMetrics {
                latency: metrics::histogram!(m::DELIVERY_LATENCY, labels.clone()),
                e2e: metrics::histogram!(m::DELIVERY_E2E_LATENCY, labels.clone()),
                healthy: {
                    // A trigger a reload restarts keeps what its last attempt said.
                    let failing = health.recent().failing;
                    let g = metrics::gauge!(m::SUBSCRIBER_HEALTHY, labels.clone());
                    g.set(if failing { 0.0 } else { 1.0 });
                    g
                },
                labels,
                attempts: Mutex::new(HashMap::new()),
            },
            health,
            down: {
                // A trigger started, or changed by a reload, starts with its subscriber up.
                let down = super::down::Down::of(&TriggerId::new(ns, name));
                down.reset();
                down
            },
            pause: super::pause::Pause::of(&TriggerId::new(ns, name)),
        })
    }

    /// When the next first delivery may start under the trigger's `rateLimit` (`None`: it has
    /// none), with that start taken: each call gets the next one.
    pub(super) fn next_start(&self) -> Option<tokio::time::Instant> {
        let rate = self.config.rate_limit?;
        let now = tokio::time::Instant::now();
        let mut next = lock(&self.pacing);
        let start = next.map_or(now, |n| n.max(now));
        *next = Some(
            start
                + std::time::Duration::try_from_secs_f64(1.0 / rate)
                    .unwrap_or(std::time::Duration::from_secs(3600)),
        );
        Some(start)
    }

    /// The metric labels that name this trigger.
    pub(crate) fn labels(&self) -> Vec<metrics::Label> {
        self.metrics.labels.clone()
    }

    /// The broker's log id, `namespace/name`.
    pub fn broker_id(&self) -> &str {
        &self.broker
    }

    /// Counts an attempt at `event` by its response code and outcome, and its latency; for
    /// one that delivered it, the time since the event arrived at its broker.
    pub(super) fn count_attempt(&self, event: &CloudEvent, r: &AttemptResult) {
        self.count_request(r);
        self.count_event(event, r);
    }

    /// Counts attempt `r` as a request: the trigger's health and the attempt latency (a
    /// batch's attempt once).
    pub(super) fn count_request(&self, r: &AttemptResult) {
        self.health.record(r);
        let delivered = r.verdict == Verdict::Delivered;
        self.metrics.healthy.set(if delivered { 1.0 } else { 0.0 });
        self.metrics.latency.record(r.latency.as_secs_f64());
    }

    /// Counts attempt `r` for `event`: by response code and outcome, and for one that
    /// delivered it, the time since it arrived (a batch's attempt once per event).
    pub(super) fn count_event(&self, event: &CloudEvent, r: &AttemptResult) {
        if r.verdict == Verdict::Delivered
            && let Some(since) = since_arrival(event, r.started + r.latency)
        {
            self.metrics.e2e.record(since.as_secs_f64());
        }
        let code = r.response_code();
        let outcome = if r.held { "held" } else { outcome(r.verdict) };
        let mut counters = lock(&self.metrics.attempts);
        let by_code = counters.entry(outcome).or_default();
        if let Some(c) = by_code.get(code.as_ref()) {
            c.increment(1);
        } else {
            let mut labels = self.labels();
            labels.push(metrics::Label::new("response_code", code.to_string()));
            labels.push(metrics::Label::new("outcome", outcome));
            let c = metrics::counter!(m::DELIVERY_COUNT, labels);
            c.increment(1);
            by_code.insert(code.into_owned(), c);
        }
    }
}

/// The `outcome` label of an attempt with `verdict`: the class of its result under the
/// delivery rules (`spec/delivery.md`).
fn outcome(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Delivered => "delivered",
        Verdict::Retry => "retryable",
        Verdict::DeadLetter => "not_retryable",
    }
}

/// How long before `answered` `event` arrived at its broker (its `knativearrivaltime`);
/// `None` without one, or with one in the future (another machine's clock).
fn since_arrival(
    event: &CloudEvent,
    answered: std::time::SystemTime,
) -> Option<std::time::Duration> {
    let (ExtValue::Timestamp(text) | ExtValue::String(text)) =
        event.extensions.get(ARRIVAL_EXTENSION)?
    else {
        return None;
    };
    let arrived = chrono::DateTime::parse_from_rfc3339(text).ok()?;
    let arrived = std::time::SystemTime::from(arrived.with_timezone(&chrono::Utc));
    answered.duration_since(arrived).ok()
}
