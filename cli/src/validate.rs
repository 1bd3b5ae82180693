//! `switchyard validate` (load a configuration as `serve` would and list what it holds) and
//! `switchyard explain` (why a Trigger takes an event or not), offline.

use std::path::Path;

use anyhow::{Context, Result};
use switchyard_core::config::{Config, Outcome};
use switchyard_core::id::TriggerId;
use switchyard_core::resources::{DEFAULT_NAMESPACE, Destination, Target};

/// Loads and checks the configuration at `config`; one line per resource, then what was
/// ignored and what is not ready, and a summary line. With `strict`, anything ignored is an
/// error.
pub fn run(config: &Path, strict: bool) -> Result<String> {
    let report = Config::report(config);
    let documents = documents_summary(&report.documents);
    let config = match report.config {
        Ok(c) => c,
        Err(e) => {
            // Each document's outcome on standard output, the first refusal as the error.
            let mut out = String::new();
            for (file, label, outcome) in &report.documents {
                out.push_str(&document_line(file, label, outcome));
            }
            out.push_str(&documents);
            let refused = report
                .documents
                .iter()
                .any(|(_, _, o)| matches!(o, Outcome::Refused(_)));
            if !refused {
                out.push_str("the configuration is refused: its references do not hold\n");
            }
            #[allow(clippy::print_stdout)]
            {
                print!("{out}");
            }
            return Err(e.into());
        }
    };
    if strict && let Some(first) = config.ignored.first() {
        anyhow::bail!(
            "{first} (--strict; {} ignored in all)",
            config.ignored.len()
        );
    }
    switchyard_triggers::dispatch::check_filters(&config)?;
    let event_types = std::sync::Arc::new(switchyard_broker::eventtypes::EventTypePolicy::new(
        &config,
        Default::default(),
    )?);
    switchyard_adapters::check(&config, &event_types)?;
    let mut out = String::new();
    for (ns, name) in config.brokers.keys() {
        out.push_str(&format!("Broker {ns}/{name}\n"));
    }
    for ((ns, name), t) in &config.triggers {
        out.push_str(&format!(
            "Trigger {ns}/{name} -> broker {}, subscriber {}\n",
            t.spec.broker,
            target(&config, ns, &t.spec.subscriber)
        ));
    }
    for ((ns, name), s) in &config.sequences {
        out.push_str(&format!(
            "Sequence {ns}/{name}: {} steps, Brokers and Triggers {name}-kn-sequence-*\n",
            s.spec.steps.len()
        ));
    }
    for ((ns, name), p) in &config.parallels {
        out.push_str(&format!(
            "Parallel {ns}/{name}: {} branches, Brokers and Triggers {name}-kn-parallel*\n",
            p.spec.branches.len()
        ));
    }
    for ((ns, name), table) in &config.address_tables {
        let domain = table
            .spec
            .cluster_domain
            .as_ref()
            .map(|d| format!(", cluster domain {d}"))
            .unwrap_or_default();
        out.push_str(&format!(
            "AddressTable {ns}/{name}: {} addresses{domain}\n",
            table.spec.addresses.len()
        ));
    }
    for ((ns, name), s) in &config.sinks {
        out.push_str(&format!("Sink {ns}/{name} -> {}\n", s.spec.uri));
    }
    for line in switchyard_adapters::describe(&config) {
        out.push_str(&line);
        out.push('\n');
    }
    for ((ns, name), s) in &config.kafka_sinks {
        out.push_str(&format!(
            "KafkaSink {ns}/{name} -> topic {} at {}\n",
            s.spec.topic,
            s.spec.bootstrap_servers.join(",")
        ));
    }
    for ((ns, name), s) in &config.nats_sinks {
        out.push_str(&format!(
            "NatsSink {ns}/{name} -> subject {} at {}\n",
            s.spec.subject,
            s.spec.servers.join(",")
        ));
    }
    for ((ns, name), et) in &config.event_types {
        let broker = et.broker().map_or_else(
            || "no broker".to_owned(),
            |(b_ns, b)| format!("broker {b_ns}/{b}"),
        );
        out.push_str(&format!(
            "EventType {ns}/{name} -> {} ({broker})\n",
            et.spec.ty
        ));
    }
    for ignored in &config.ignored {
        out.push_str(&format!("{ignored}\n"));
    }
    for not_ready in &config.not_ready {
        out.push_str(&format!("not ready: {not_ready}\n"));
    }
    let resources = out.lines().count() - config.ignored.len() - config.not_ready.len();
    out.push_str(&format!(
        "{resources} resources loaded, {} ignored, {} not ready\n",
        config.ignored.len(),
        config.not_ready.len()
    ));
    out.push_str(&documents);
    Ok(out)
}

/// One document's line of the report printed when something is refused.
fn document_line(file: &str, label: &str, outcome: &Outcome) -> String {
    let at = if label.is_empty() {
        file.to_owned()
    } else {
        format!("{file}: {label}")
    };
    match outcome {
        Outcome::Loaded => format!("loaded   {at}\n"),
        Outcome::LoadedIgnoring(fields) => {
            let names: Vec<&str> = fields.iter().filter_map(|f| f.field.as_deref()).collect();
            format!("loaded   {at} (ignoring {})\n", names.join(", "))
        }
        Outcome::Skipped(why) => format!("skipped  {at}: {}\n", why.why),
        Outcome::Refused(e) => format!("refused  {e}\n"),
    }
}

/// The last line: how many documents loaded, ignoring fields or not, were skipped, refused.
fn documents_summary(documents: &[(String, String, Outcome)]) -> String {
    let count = |f: fn(&Outcome) -> bool| documents.iter().filter(|(_, _, o)| f(o)).count();
    let ignoring = count(|o| matches!(o, Outcome::LoadedIgnoring(_)));
    let loaded = count(|o| matches!(o, Outcome::Loaded)) + ignoring;
    let n = documents.len();
    format!(
        "{n} document{}: {loaded} loaded ({ignoring} ignoring fields), {} skipped, {} refused\n",
        if n == 1 { "" } else { "s" },
        count(|o| matches!(o, Outcome::Skipped(_))),
        count(|o| matches!(o, Outcome::Refused(_)))
    )
}

/// Where a destination resolves to, as a reader would name it.
fn target(config: &Config, ns: &str, dest: &Destination) -> String {
    match config.resolve(ns, dest) {
        Ok(Target::Broker { namespace, name }) => format!("Broker {namespace}/{name}"),
        Ok(Target::Stream {
            kind,
            namespace,
            name,
        }) => format!("{kind} {namespace}/{name}"),
        Ok(Target::Url(url)) => url,
        Err(e) => e,
    }
}

/// Why Trigger `trigger` (`namespace/name`, or a name in `default`) takes the JSON event in
/// `event` (a file, or `-` for standard input), or not.
pub fn explain(config: &Path, trigger: &str, event: &Path) -> Result<String> {
    let config = Config::load(config)?;
    let id =
        TriggerId::parse(trigger).unwrap_or_else(|_| TriggerId::new(DEFAULT_NAMESPACE, trigger));
    let (ns, name) = (id.namespace(), id.name());
    let t = config
        .triggers
        .get(&(ns.to_owned(), name.to_owned()))
        .with_context(|| format!("no Trigger {ns}/{name} in the configuration"))?;
    let filter = switchyard_triggers::filter::Filter::compile(&t.spec)
        .with_context(|| format!("Trigger {ns}/{name}"))?;
    let bytes = if event.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)?;
        buf
    } else {
        std::fs::read(event).with_context(|| format!("cannot read {}", event.display()))?
    };
    let event = switchyard_core::json::decode_event(&bytes)
        .with_context(|| format!("{} is not a valid JSON event", event.display()))?;
    let why = filter.explain(&event);
    if why.is_empty() {
        return Ok(format!(
            "match: Trigger {ns}/{name} takes event {}\n",
            event.id
        ));
    }
    let mut out = format!(
        "no match: Trigger {ns}/{name} does not take event {}\n",
        event.id
    );
    for line in why {
        out.push_str(&format!("  {line}\n"));
    }
    Ok(out)
}
