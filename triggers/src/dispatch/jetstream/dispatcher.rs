//! The running triggers of the JetStream engine, and how a reload changes them. Every replica
//! runs one, on its own copy of the configuration; their consumers are shared.
//!
//! A reload (spec/reload.md) keeps a trigger whose inputs are the same running untouched;
//! drains a changed one (the messages it pulled and did not start are handed back to
//! JetStream) and opens its consumers again with the new settings, so what it had not yet
//! delivered is matched against the new filter and sent to the new subscriber; opens an
//! added one at the end of its broker's stream. A trigger that changes between ordered and
//! not changes consumers (one per partition, or one): the new ones start where the old ones
//! had acknowledged everything before, so nothing is skipped (what was acknowledged out of
//! order after that point is delivered again).
//!
//! The consumers no trigger of the configuration uses any more (a trigger removed, moved to
//! another broker, or its `deadLetterSink` dropped) are deleted, at start and after each
//! reload: a removed trigger's retries (the deliveries with an attempt history) become dead
//! letters with reason `trigger removed` first, as in the embedded mode. Only consumers
//! Switchyard made (their description says so) are touched.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, RwLock};

use async_nats::jetstream::stream::Stream;
use futures_util::StreamExt;
use switchyard_broker::eventtypes::EventTypePolicy;
use switchyard_broker::jetstream::{JetStreamLog, Names};
use switchyard_broker::log::{EventLog, LogError};
use switchyard_broker::tasks::Tasks;
use switchyard_core::config::Config;
use switchyard_core::egress::EgressPolicy;
use switchyard_core::id::TriggerId;
use switchyard_core::resources::Trigger;
use tokio::sync::watch;

use super::{JetStreamSource, Lane, consumer_name, dead_letter};
use crate::dispatch::trigger::{Context, Inputs};
use crate::dispatch::{
    DRAIN_TIMEOUT, DispatchError, TriggerChanges, TriggerRuntime, check_filters, compile_filter,
    deliver, runnable,
};
use crate::filter::Filter;
use crate::records::{self, DeadLetter, DeadLetterReason, Origin};
use crate::streams::StreamSinks;

/// What every consumer Switchyard makes says first in its description.
const MADE_BY_US: &str = "Switchyard:";

/// The triggers a replica runs now, for the management API (a redrive goes only to one of
/// them); a reload changes them.
#[derive(Debug, Clone, Default)]
pub struct JetStreamTriggers(Arc<RwLock<Vec<Running>>>);

/// A running trigger and the consumers it reads its broker's stream through.
type Running = (Arc<TriggerRuntime>, Vec<String>);

impl JetStreamTriggers {
    /// Every running trigger.
    pub fn all(&self) -> Vec<Arc<TriggerRuntime>> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(t, _)| Arc::clone(t))
            .collect()
    }

    /// The consumers trigger `id` reads its broker's stream through (one, or one per
    /// partition), if it runs.
    pub fn consumers(&self, id: &TriggerId) -> Option<Vec<String>> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .find(|(t, _)| t.id == *id)
            .map(|(_, c)| c.clone())
    }

    /// Trigger `name` of broker `broker` (`namespace/name`), if it runs.
    pub fn get(&self, broker: &str, name: &str) -> Option<Arc<TriggerRuntime>> {
        self.all()
            .into_iter()
            .find(|t| t.broker_id() == broker && t.id.name() == name)
    }

    fn set(&self, triggers: Vec<Running>) {
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = triggers;
    }
}

/// One running trigger: its loops (one per partition for an ordered trigger), the signal that
/// drains them, and what it was built from.
struct Unit {
    trigger: Arc<TriggerRuntime>,
    sources: Vec<Arc<JetStreamSource>>,
    delivery: Tasks,
    /// The dead-letter sink's pump, which runs until stopped.
    tasks: Tasks,
    stop: watch::Sender<bool>,
    inputs: Inputs,
}

impl Unit {
    /// Stops taking work, lets the attempts in flight settle (up to [`DRAIN_TIMEOUT`]) and
    /// hands back what was pulled and not started, so the other replicas take it at once;
    /// what is not settled by then is handed out again by JetStream once its ack wait runs
    /// out (at-least-once).
    async fn drain(self) {
        self.stop.send_replace(true);
        self.delivery.finish(DRAIN_TIMEOUT).await;
        for source in &self.sources {
            source.hand_back().await;
        }
        self.tasks.shutdown().await;
    }

    /// Whether it reads its broker's stream through one consumer per partition.
    fn partitioned(&self) -> bool {
        self.sources
            .iter()
            .any(|s| matches!(s.lane, Lane::Partition(_)))
    }
}

/// A trigger built and checked, not yet opened: its runtime, the lanes it reads, a filter
/// for each.
struct Built {
    trigger: Arc<TriggerRuntime>,
    lanes: Vec<(Lane, Filter)>,
}

impl Built {
    fn new(
        cx: &Context<'_>,
        partitions: u32,
        ns: &str,
        name: &str,
        t: &Trigger,
    ) -> Result<Built, DispatchError> {
        let mut runtime = TriggerRuntime::build(cx, ns, name, t)?;
        let mut lanes: Vec<Lane> = if runtime.config.ordered {
            // JetStream keeps the order (module docs of `jetstream`); the core must not hold
            // keys.
            runtime.config.ordered = false;
            (0..partitions).map(Lane::Partition).collect()
        } else {
            vec![Lane::Stream]
        };
        lanes.push(Lane::Redrive);
        let lanes = lanes
            .into_iter()
            .map(|lane| Ok((lane, compile_filter(cx.config, ns, name, t)?)))
            .collect::<Result<_, DispatchError>>()?;
        Ok(Built {
            trigger: Arc::new(runtime),
            lanes,
        })
    }

    fn partitioned(&self) -> bool {
        self.lanes
            .iter()
            .any(|(l, _)| matches!(l, Lane::Partition(_)))
    }

    /// Opens its consumers (the broker's stream's ones at `start`, when given) and starts its
    /// loops.
    async fn open(
        self,
        log: &Arc<JetStreamLog>,
        event_types: &Arc<EventTypePolicy>,
        inputs: Inputs,
        start: Option<u64>,
    ) -> Result<Unit, DispatchError> {
        let trigger = self.trigger;
        let mut sources = Vec::with_capacity(self.lanes.len());
        for (lane, filter) in self.lanes {
            let start = if lane == Lane::Redrive { None } else { start };
            sources.push(Arc::new(
                JetStreamSource::open(
                    Arc::clone(&trigger),
                    lane,
                    filter,
                    Arc::clone(log),
                    Arc::clone(event_types),
                    start,
                )
                .await?,
            ));
        }
        let mut tasks = Tasks::new("trigger");
        if let Some(sink) = &trigger.config.dead_letter_sink {
            let consumer = dead_letter::consumer(&trigger, log).await?;
            tasks.spawn(dead_letter::pump(
                Arc::clone(&trigger),
                sink.clone(),
                consumer,
            ));
        }
        let (stop, stopped) = watch::channel(false);
        let mut delivery = Tasks::new("delivery loop");
        for source in &sources {
            delivery.spawn(deliver::dispatch_loop(
                Arc::clone(&trigger),
                Arc::clone(source),
                stopped.clone(),
            ));
        }
        Ok(Unit {
            trigger,
            sources,
            delivery,
            tasks,
            stop,
            inputs,
        })
    }
}

/// The running triggers of the JetStream engine.
pub struct JetStreamDispatcher {
    units: HashMap<TriggerId, Unit>,
    log: Arc<JetStreamLog>,
    egress: EgressPolicy,
    running: JetStreamTriggers,
    /// The brokers of the configuration in force, by id.
    brokers: BTreeSet<String>,
}

impl std::fmt::Debug for JetStreamDispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamDispatcher")
            .field("triggers", &self.units.len())
            .finish_non_exhaustive()
    }
}

fn broker_ids(config: &Config) -> BTreeSet<String> {
    config
        .brokers
        .keys()
        .map(|(ns, name)| switchyard_core::id::join(ns, name))
        .collect()
}

impl JetStreamDispatcher {
    /// Starts delivery for every trigger of `config` from its durable consumer (created when
    /// missing), then deletes the consumers of triggers it no longer has. The brokers'
    /// streams must exist ([`JetStreamLog::ensure_brokers`]).
    pub async fn start(
        config: &Config,
        log: Arc<JetStreamLog>,
        event_types: Arc<EventTypePolicy>,
        streams: StreamSinks,
        egress: EgressPolicy,
    ) -> Result<JetStreamDispatcher, DispatchError> {
        check_filters(config)?;
        let dyn_log: Arc<dyn EventLog> = Arc::clone(&log) as Arc<dyn EventLog>;
        let cx = Context {
            config,
            event_types: &event_types,
            log: &dyn_log,
            egress: &egress,
            streams: &streams,
        };
        let mut units = HashMap::new();
        for ((ns, name), t) in runnable(config) {
            let built = Built::new(&cx, log.partitions(), ns, name, t)?;
            let unit = built
                .open(&log, &event_types, cx.inputs(ns, t), None)
                .await?;
            units.insert(unit.trigger.id.clone(), unit);
        }
        let dispatcher = JetStreamDispatcher {
            units,
            log,
            egress,
            running: JetStreamTriggers::default(),
            brokers: broker_ids(config),
        };
        dispatcher.publish();
        if let Err(e) = dispatcher.forget_removed(&dispatcher.brokers, config).await {
            tracing::warn!(error = %e, "cannot delete the consumers of removed triggers; the next start or reload tries again");
        }
        Ok(dispatcher)
    }

    /// The triggers it runs, as they change.
    pub fn triggers(&self) -> JetStreamTriggers {
        self.running.clone()
    }

    fn publish(&self) {
        let mut all: Vec<_> = self
            .units
            .values()
            .map(|u| {
                let consumers = u
                    .sources
                    .iter()
                    .filter(|s| s.lane != Lane::Redrive)
                    .map(|s| consumer_name(&u.trigger.id, s.lane))
                    .collect();
                (Arc::clone(&u.trigger), consumers)
            })
            .collect();
        all.sort_by(|a, b| a.0.id.cmp(&b.0.id));
        self.running.set(all);
    }

    /// Takes `config` in place of the running one, trigger by trigger, as the embedded
    /// [`Dispatcher::reconfigure`](crate::dispatch::Dispatcher::reconfigure) does (the module
    /// docs say how the consumers follow). Every trigger is built before anything stops, so
    /// one that cannot be built changes nothing. The brokers' streams must exist.
    pub async fn reconfigure(
        &mut self,
        config: &Config,
        event_types: Arc<EventTypePolicy>,
        streams: StreamSinks,
        event_types_changed: bool,
        restarted_sinks: &HashSet<String>,
    ) -> Result<TriggerChanges, DispatchError> {
        check_filters(config)?;
        let dyn_log: Arc<dyn EventLog> = Arc::clone(&self.log) as Arc<dyn EventLog>;
        let egress = self.egress.clone();
        let cx = Context {
            config,
            event_types: &event_types,
            log: &dyn_log,
            egress: &egress,
            streams: &streams,
        };
        // Build first: an error here leaves everything as it was.
        let mut wanted: HashMap<TriggerId, (Inputs, Option<Built>)> = HashMap::new();
        for ((ns, name), t) in runnable(config) {
            let id = TriggerId::new(ns, name);
            let inputs = cx.inputs(ns, t);
            let keep = !event_types_changed
                && !inputs.uses_any(restarted_sinks)
                && self.units.get(&id).is_some_and(|u| u.inputs == inputs);
            let built = if keep {
                None
            } else {
                Some(Built::new(&cx, self.log.partitions(), ns, name, t)?)
            };
            wanted.insert(id, (inputs, built));
        }
        let stopping: Vec<TriggerId> = self
            .units
            .keys()
            .filter(|id| wanted.get(*id).is_none_or(|(_, b)| b.is_some()))
            .cloned()
            .collect();
        let mut changes = TriggerChanges::default();
        // A changed trigger that goes from one consumer to one per partition (or back) on
        // the same broker starts its new consumers where the old ones had got to.
        let mut carried: Vec<(TriggerId, Vec<String>)> = Vec::new();
        let mut draining = Vec::new();
        for id in stopping {
            let Some(unit) = self.units.remove(&id) else {
                continue;
            };
            match wanted.get(&id) {
                Some((_, Some(built))) => {
                    if built.trigger.broker == unit.trigger.broker
                        && built.partitioned() != unit.partitioned()
                    {
                        let old = unit
                            .sources
                            .iter()
                            .filter(|s| s.lane != Lane::Redrive)
                            .map(|s| consumer_name(&id, s.lane))
                            .collect();
                        carried.push((id.clone(), old));
                    }
                    changes.changed.push(id);
                }
                _ => changes.removed.push(id),
            }
            draining.push(unit.drain());
        }
        self.publish();
        futures_util::future::join_all(draining).await;

        let mut failed: Option<DispatchError> = None;
        for (id, (inputs, built)) in wanted {
            let Some(built) = built else {
                continue;
            };
            let start = match carried.iter().find(|(c, _)| *c == id) {
                Some((_, old)) => match self.start_after(&built.trigger, old).await {
                    Ok(start) => start,
                    Err(e) => {
                        failed.get_or_insert(e.into());
                        continue;
                    }
                },
                None => None,
            };
            match built.open(&self.log, &event_types, inputs, start).await {
                Ok(unit) => {
                    if !changes.changed.contains(&id) {
                        changes.added.push(id.clone());
                    }
                    self.units.insert(id, unit);
                }
                Err(e) => {
                    tracing::error!(trigger = %id, error = %e, "a trigger could not start");
                    failed.get_or_insert(e);
                }
            }
        }
        self.publish();
        let new_brokers = broker_ids(config);
        let touched: BTreeSet<String> = self.brokers.union(&new_brokers).cloned().collect();
        if let Err(e) = self.forget_removed(&touched, config).await {
            failed.get_or_insert(e.into());
        }
        self.brokers = new_brokers;
        changes.added.sort();
        changes.changed.sort();
        changes.removed.sort();
        match failed {
            Some(error) => Err(DispatchError::Partly {
                changes,
                error: Box::new(error),
            }),
            None => Ok(changes),
        }
    }

    /// The first stream sequence the consumers `old` of `trigger` had not all acknowledged
    /// (`None`: none of them exists any more). A consumer with nothing pending and nothing
    /// out had taken everything stored: its acknowledgement floor may be far behind (a
    /// partition no event went to), so it counts as at the stream's end.
    async fn start_after(
        &self,
        trigger: &TriggerRuntime,
        old: &[String],
    ) -> Result<Option<u64>, LogError> {
        let mut stream = self.stream(&Names::of(&trigger.broker).stream).await?;
        let last = stream
            .info()
            .await
            .map_err(|e| LogError::unavailable("cannot read a broker's stream", &e))?
            .state
            .last_sequence;
        let mut floor: Option<u64> = None;
        for name in old {
            if let Ok(info) = stream.consumer_info(name).await {
                let done = if info.num_pending == 0 && info.num_ack_pending == 0 {
                    last
                } else {
                    info.ack_floor.stream_sequence
                };
                floor = Some(floor.map_or(done, |f| f.min(done)));
            }
        }
        Ok(floor.map(|f| f + 1))
    }

    async fn stream(&self, name: &str) -> Result<Stream, LogError> {
        self.log
            .context()
            .get_stream(name)
            .await
            .map_err(|e| LogError::unavailable("cannot open a broker's stream", &e))
    }

    /// Deletes, on the streams of `brokers`, the consumers Switchyard made that no trigger
    /// of `config` reads any more; a removed trigger's retries become dead letters first.
    /// A trigger of `config` that did not start keeps its consumers.
    async fn forget_removed(
        &self,
        brokers: &BTreeSet<String>,
        config: &Config,
    ) -> Result<(), LogError> {
        for broker in brokers {
            let names = Names::of(broker);
            // The triggers of this broker in the configuration, and the consumers of those
            // that run.
            let mut known: HashSet<String> = HashSet::new();
            let mut in_use: HashSet<(String, String)> = HashSet::new();
            for ((ns, name), t) in runnable(config) {
                if switchyard_core::id::join(ns, &t.spec.broker) != *broker {
                    continue;
                }
                known.insert(name.clone());
                let Some(unit) = self.units.get(&TriggerId::new(ns, name)) else {
                    // It did not start: its consumers are left as they are.
                    for stream in [
                        &names.stream,
                        &names.redrive_stream,
                        &names.dead_letter_stream,
                    ] {
                        in_use.insert((stream.clone(), format!("{name}*")));
                    }
                    continue;
                };
                for s in &unit.sources {
                    let stream = match s.lane {
                        Lane::Redrive => &names.redrive_stream,
                        _ => &names.stream,
                    };
                    in_use.insert((stream.clone(), consumer_name(&unit.trigger.id, s.lane)));
                }
                if unit.trigger.config.dead_letter_sink.is_some() {
                    in_use.insert((names.dead_letter_stream.clone(), name.clone()));
                }
            }
            for stream_name in [
                &names.stream,
                &names.redrive_stream,
                &names.dead_letter_stream,
            ] {
                let Ok(stream) = self.log.context().get_stream(stream_name).await else {
                    // A broker whose streams were never made has nothing to forget.
                    continue;
                };
                let mut consumers = stream.consumers();
                let mut ours = Vec::new();
                while let Some(info) = consumers.next().await {
                    let info = info.map_err(|e| {
                        LogError::unavailable("cannot list a stream's consumers", &e)
                    })?;
                    if info
                        .config
                        .description
                        .as_deref()
                        .is_some_and(|d| d.starts_with(MADE_BY_US))
                    {
                        ours.push(info.name);
                    }
                }
                for consumer in ours {
                    let trigger = trigger_of(&consumer);
                    let wildcard = (stream_name.clone(), format!("{trigger}*"));
                    if in_use.contains(&(stream_name.clone(), consumer.clone()))
                        || in_use.contains(&wildcard)
                    {
                        continue;
                    }
                    if *stream_name == names.stream && !known.contains(trigger) {
                        self.retries_to_dead_letters(broker, &stream, trigger)
                            .await?;
                    }
                    match stream.delete_consumer(&consumer).await {
                        Ok(_) => {
                            tracing::info!(broker = %broker, stream = %stream_name, %consumer, "deleted the consumer of a trigger no longer configured")
                        }
                        Err(e) => {
                            tracing::debug!(%consumer, error = %e, "cannot delete a consumer (another replica may have)")
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Turns removed trigger `trigger`'s retries on `broker` (the deliveries whose attempts
    /// are kept) into dead letters with reason `trigger removed`.
    async fn retries_to_dead_letters(
        &self,
        broker: &str,
        stream: &Stream,
        trigger: &str,
    ) -> Result<(), LogError> {
        let attempts = self.log.attempts_bucket().await?;
        let prefix = format!("{}.{trigger}.", stream.cached_info().config.name);
        let mut keys = attempts
            .keys()
            .await
            .map_err(|e| LogError::unavailable("cannot list the attempt histories", &e))?;
        let mut mine = Vec::new();
        while let Some(key) = keys.next().await {
            let Ok(key) = key else { continue };
            if let Some(seq) = key
                .strip_prefix(&prefix)
                .and_then(|s| s.parse::<u64>().ok())
            {
                mine.push((key, seq));
            }
        }
        for (key, seq) in mine {
            let kept = match attempts.get(&key).await {
                Ok(Some(value)) => serde_json::from_slice(&value).unwrap_or_default(),
                _ => Vec::new(),
            };
            // Gone from the stream (retention): there is no event to keep.
            if let Ok(message) = stream.direct_get(seq).await
                && let Ok(event) = switchyard_core::store::decode(&message.payload)
            {
                let origin = Origin {
                    broker,
                    trigger,
                    offset: seq,
                    event: records::encode_event(&event),
                    destination: String::new(),
                };
                let letter = DeadLetter::new(origin, DeadLetterReason::TriggerRemoved, kept, None);
                let record = records::to_value(&letter)?;
                // The id a dead letter of this delivery would have had: stored once.
                let msg_id = format!("{}:{trigger}:{seq}", stream.cached_info().config.name);
                // Another replica taking the same configuration may be storing it at this
                // moment (JetStream answers "in process"): tried again, it is a duplicate.
                let mut backoff = switchyard_core::backoff::Backoff::STORE;
                let mut tries = 0;
                loop {
                    match self
                        .log
                        .publish_dead_letter(broker, trigger, record.clone(), msg_id.clone())
                        .await
                    {
                        Err(LogError::Unavailable(_)) if tries < 5 => {
                            tries += 1;
                            tokio::time::sleep(backoff.next_pause()).await;
                        }
                        other => {
                            other?;
                            break;
                        }
                    };
                }
                tracing::warn!(broker, trigger, offset = seq, event = %event.id, "dead-lettered: trigger removed");
            }
            let _ = attempts.purge(&key).await;
        }
        Ok(())
    }

    /// Stops taking work, lets the attempts in flight settle (up to [`DRAIN_TIMEOUT`]) and
    /// hands back what was pulled and not started, so the other replicas take it at once.
    pub async fn shutdown(self) {
        futures_util::future::join_all(self.units.into_values().map(Unit::drain)).await;
    }
}

/// The trigger a consumer is for: its name, without an ordered trigger's partition suffix
/// (trigger names are DNS labels, so they hold no `_`).
fn trigger_of(consumer: &str) -> &str {
    consumer.split_once("_p").map_or(consumer, |(t, _)| t)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_partition_consumer_belongs_to_its_trigger() {
        assert_eq!(super::trigger_of("orders_p3"), "orders");
        assert_eq!(super::trigger_of("orders"), "orders");
        assert_eq!(super::trigger_of("my-p2"), "my-p2");
    }
}
