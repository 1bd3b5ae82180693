//! The source kinds a build can leave out (`--no-default-features`, the edge build): each is
//! still a [`Kind`], so that a configuration with such a source (or a KafkaSink) is refused
//! when it is loaded, validated or reloaded, with one line naming the feature that has it,
//! rather than read as an unknown kind or ignored.

use std::sync::Arc;

use switchyard_broker::eventtypes::EventTypePolicy;
use switchyard_core::config::Config;

use crate::SourceError;
use crate::kind::{Kind, Setup, StartFuture};

/// Why a resource of `kind` cannot run in this build.
pub(crate) fn refusal(kind: &str, namespace: &str, name: &str, feature: &str) -> SourceError {
    SourceError(format!(
        "{kind} {namespace}/{name}: this switchyard was built without {kind}s (the cargo \
         feature `{feature}`; the edge build leaves it out)"
    ))
}

/// Refuses the first of `keys` (sources or sinks of `kind`), if any.
fn refuse_any<'a>(
    mut keys: impl Iterator<Item = &'a (String, String)>,
    kind: &str,
    feature: &str,
) -> Result<(), SourceError> {
    match keys.next() {
        Some((ns, name)) => Err(refusal(kind, ns, name, feature)),
        None => Ok(()),
    }
}

/// Refuses a source of `kind` that loading set aside as not ready (its Broker is missing):
/// in this build it could never run, whatever the Broker.
fn refuse_parked(config: &Config, kind: &str, feature: &str) -> Result<(), SourceError> {
    let prefix = format!("{kind} ");
    let parked = config.not_ready.iter().find_map(|e| {
        let (ns, name) = e
            .resource
            .as_deref()?
            .strip_prefix(&prefix)?
            .split_once('/')?;
        Some((ns.to_owned(), name.to_owned()))
    });
    match parked {
        Some((ns, name)) => Err(refusal(kind, &ns, &name, feature)),
        None => Ok(()),
    }
}

/// Refuses what this build left out, before anything starts (`serve` calls it first, so
/// nothing is bound or consumed by a server that is then refused).
pub(crate) fn refuse(config: &Config) -> Result<(), SourceError> {
    #[cfg(not(feature = "kafka"))]
    check_kafka_config(config)?;
    #[cfg(not(feature = "s3"))]
    check_s3_config(config)?;
    let _ = config;
    Ok(())
}

#[cfg(not(feature = "kafka"))]
fn check_kafka_config(config: &Config) -> Result<(), SourceError> {
    refuse_any(config.kafka_sources.keys(), "KafkaSource", "kafka")?;
    refuse_parked(config, "KafkaSource", "kafka")?;
    refuse_any(config.kafka_sinks.keys(), "KafkaSink", "kafka")
}

#[cfg(not(feature = "kafka"))]
fn check_kafka(config: &Config, _: &Arc<EventTypePolicy>) -> Result<(), SourceError> {
    check_kafka_config(config)
}

#[cfg(not(feature = "s3"))]
fn check_s3_config(config: &Config) -> Result<(), SourceError> {
    refuse_any(config.s3_sources.keys(), "S3Source", "s3")?;
    refuse_parked(config, "S3Source", "s3")
}

#[cfg(not(feature = "s3"))]
fn check_s3(config: &Config, _: &Arc<EventTypePolicy>) -> Result<(), SourceError> {
    check_s3_config(config)
}

#[cfg(not(feature = "kafka"))]
fn start_kafka<'a>(s: &'a Setup<'a>) -> StartFuture<'a> {
    Box::pin(async move {
        refuse_any(s.config.kafka_sources.keys(), "KafkaSource", "kafka")?;
        Ok(crate::kind::Started::default())
    })
}

#[cfg(not(feature = "s3"))]
fn start_s3<'a>(s: &'a Setup<'a>) -> StartFuture<'a> {
    Box::pin(async move {
        refuse_any(s.config.s3_sources.keys(), "S3Source", "s3")?;
        Ok(crate::kind::Started::default())
    })
}

#[cfg(not(feature = "kafka"))]
/// KafkaSource, left out.
pub(crate) const KAFKA: Kind = Kind {
    name: "KafkaSource",
    describe: |config| {
        config
            .kafka_sources
            .keys()
            .map(|(ns, name)| format!("KafkaSource {ns}/{name}: not in this build"))
            .collect()
    },
    check: Some(check_kafka),
    start: start_kafka,
};

#[cfg(not(feature = "s3"))]
/// S3Source, left out.
pub(crate) const S3: Kind = Kind {
    name: "S3Source",
    describe: |config| {
        config
            .s3_sources
            .keys()
            .map(|(ns, name)| format!("S3Source {ns}/{name}: not in this build"))
            .collect()
    },
    check: Some(check_s3),
    start: start_s3,
};
