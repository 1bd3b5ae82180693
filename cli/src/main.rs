//! `switchyard`: the broker binary and the operator's commands; `serve` is [`switchyard::run`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use switchyard::{Clock, Config, RedbOptions, ServerOptions};
use switchyard_broker::RedbLog;
use switchyard_broker::log::EventLog;
use switchyard_broker::server::DEFAULT_BODY_LIMIT_BYTES;
use switchyard_core::id::TriggerId;
use switchyard_core::resources::DEFAULT_NAMESPACE;

/// mimalloc instead of glibc's malloc: the delivery path allocates per event (HTTP requests,
/// headers, decoded events), and glibc's allocator took a fifth of the server's CPU in a
/// profile of one-trigger delivery (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod client;
mod dlq;
mod get;
mod send;
mod tail;

#[derive(Debug, Parser)]
#[command(
    name = "switchyard",
    version,
    about = "A CloudEvents broker in one binary"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the broker: ingress, store and (later) triggers, with the given configuration.
    Serve {
        /// A YAML/JSON file, or a directory of them, with Broker, Trigger, Sink and EventType resources.
        #[arg(long, short)]
        config: PathBuf,
        /// Where the store keeps its files.
        #[arg(long, default_value = ".data")]
        data_dir: PathBuf,
        /// Address to listen on (port 0 picks a free port; the address is printed).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Largest request body taken, in bytes (at least 65536).
        #[arg(long, default_value_t = DEFAULT_BODY_LIMIT_BYTES)]
        max_body_bytes: usize,
        /// The store's page cache, in bytes.
        #[arg(long, default_value_t = RedbOptions::default().cache_size_bytes)]
        cache_size_bytes: usize,
        /// Append requests that may wait for the store before ingress answers 503.
        #[arg(long, default_value_t = RedbOptions::default().queue_capacity)]
        queue_capacity: usize,
        /// Do not fsync commits. Only for benchmarks: a crash then loses accepted events.
        #[arg(long)]
        no_fsync: bool,
    },
    /// Check a configuration and print what it defines.
    Validate {
        /// A YAML/JSON file, or a directory of them.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Say whether an event passes a trigger's filter, and if not, which part fails and why.
    Explain {
        /// A YAML/JSON file, or a directory of them.
        #[arg(long, short)]
        config: PathBuf,
        /// The trigger, as `namespace/name` (or `name` in `default`).
        #[arg(long)]
        trigger: String,
        /// A file holding the event in the JSON format (`-` reads standard input).
        #[arg(long)]
        event: PathBuf,
    },
    /// Inspect, redrive and purge a running broker's dead letters.
    Dlq(dlq::DlqArgs),
    /// List resources of a running server (`get eventtypes`).
    Get(get::GetArgs),
    /// Post one CloudEvent to a broker (or any URL), in binary or structured mode.
    Send(send::SendArgs),
    /// Stream a broker's events as they are stored, with filters.
    Tail(tail::TailArgs),
    /// Print a broker's stored events as JSON lines (the store must not be in use).
    Events {
        /// Where the store keeps its files.
        #[arg(long, default_value = ".data")]
        data_dir: PathBuf,
        /// The broker, as `namespace/name`.
        #[arg(long)]
        broker: String,
        /// First offset to print.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// The most events to print.
        #[arg(long, default_value_t = u64::MAX)]
        limit: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("switchyard: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve {
            config,
            data_dir,
            listen,
            max_body_bytes,
            cache_size_bytes,
            queue_capacity,
            no_fsync,
        } => {
            init_tracing();
            let config = Config::load(&config)?;
            let options = ServerOptions {
                listen,
                data_dir,
                max_body_bytes,
                store: RedbOptions {
                    cache_size_bytes,
                    queue_capacity,
                    fsync: !no_fsync,
                    ..RedbOptions::default()
                },
            };
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(serve(config, options))
        }
        Command::Validate { config } => {
            let config = Config::load(&config)?;
            switchyard_triggers::dispatch::check_filters(&config)?;
            let event_types = std::sync::Arc::new(
                switchyard_broker::eventtypes::EventTypePolicy::new(&config, Default::default())?,
            );
            switchyard_adapters::ping::check(&config, &event_types)?;
            let mut out = String::new();
            for (ns, name) in config.brokers.keys() {
                out.push_str(&format!("Broker {ns}/{name}\n"));
            }
            for ((ns, name), t) in &config.triggers {
                out.push_str(&format!(
                    "Trigger {ns}/{name} -> broker {}\n",
                    t.spec.broker
                ));
            }
            for ((ns, name), s) in &config.sinks {
                out.push_str(&format!("Sink {ns}/{name} -> {}\n", s.spec.uri));
            }
            for (ns, name) in config.webhook_sources.keys() {
                out.push_str(&format!(
                    "WebhookSource {ns}/{name} at POST /sources/{ns}/{name}\n"
                ));
            }
            for ((ns, name), p) in &config.ping_sources {
                let tz = p.spec.timezone.as_deref().unwrap_or("UTC");
                out.push_str(&format!(
                    "PingSource {ns}/{name} on `{}` ({tz})\n",
                    p.spec.schedule
                ));
            }
            for ((ns, name), s) in &config.s3_sources {
                let how = match (&s.spec.webhook, &s.spec.sns, &s.spec.sqs) {
                    (Some(_), _, _) => format!("webhook at POST /sources/{ns}/{name}"),
                    (_, Some(_), _) => format!("SNS at POST /sources/{ns}/{name}"),
                    (_, _, Some(q)) => format!("polling SQS {}", q.queue_url),
                    _ => String::new(),
                };
                out.push_str(&format!("S3Source {ns}/{name}: {how}\n"));
            }
            for ((ns, name), s) in &config.kafka_sources {
                out.push_str(&format!(
                    "KafkaSource {ns}/{name}: topics {} from {} as group {}\n",
                    s.spec.topics.join(","),
                    s.spec.bootstrap_servers.join(","),
                    s.consumer_group()
                ));
            }
            for ((ns, name), s) in &config.nats_sources {
                let how = match &s.spec.jetstream {
                    Some(js) => format!(
                        "JetStream stream {} (consumer {})",
                        js.stream,
                        s.consumer_name().unwrap_or_default()
                    ),
                    None => "core NATS".to_owned(),
                };
                out.push_str(&format!(
                    "NatsSource {ns}/{name}: `{}` from {}, {how}\n",
                    s.spec.subject,
                    s.spec.servers.join(",")
                ));
            }
            for ((ns, name), s) in &config.mqtt_sources {
                out.push_str(&format!(
                    "MqttSource {ns}/{name}: {} from {} as {}\n",
                    s.spec.topics.join(","),
                    s.spec.broker,
                    s.client_id()
                ));
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
            print_out(&out);
            Ok(())
        }
        Command::Events {
            data_dir,
            broker,
            from,
            limit,
        } => dump_events(&data_dir, &broker, from, limit),
        Command::Explain {
            config,
            trigger,
            event,
        } => {
            let config = Config::load(&config)?;
            let id = TriggerId::parse(&trigger)
                .unwrap_or_else(|_| TriggerId::new(DEFAULT_NAMESPACE, trigger.as_str()));
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
                std::fs::read(&event).with_context(|| format!("cannot read {}", event.display()))?
            };
            let event = switchyard_core::json::decode_event(&bytes)
                .with_context(|| format!("{} is not a valid JSON event", event.display()))?;
            let why = filter.explain(&event);
            if why.is_empty() {
                print_out(&format!(
                    "match: Trigger {ns}/{name} takes event {}\n",
                    event.id
                ));
            } else {
                let mut out = format!(
                    "no match: Trigger {ns}/{name} does not take event {}\n",
                    event.id
                );
                for line in why {
                    out.push_str(&format!("  {line}\n"));
                }
                print_out(&out);
            }
            Ok(())
        }
        Command::Get(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            let out = runtime.block_on(get::run(args))?;
            print_out(&out);
            Ok(())
        }
        Command::Tail(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(tail::run(args))
        }
        Command::Send(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            let out = runtime.block_on(send::run(args))?;
            print_out(&out);
            Ok(())
        }
        Command::Dlq(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            let out = runtime.block_on(dlq::run(args))?;
            print_out(&out);
            Ok(())
        }
    }
}

#[allow(clippy::print_stdout)]
fn print_out(text: &str) {
    print!("{text}");
}

async fn serve(config: Config, options: ServerOptions) -> Result<()> {
    let clock = Clock::for_serve().map_err(anyhow::Error::msg)?;
    switchyard::run(
        config,
        options,
        clock,
        |addr| print_out(&format!("switchyard listening on http://{addr}\n")),
        shutdown_signal(),
    )
    .await?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM");
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

fn dump_events(data_dir: &std::path::Path, broker: &str, from: u64, limit: u64) -> Result<()> {
    let broker = client::broker_arg(broker)?.to_string();
    let broker = broker.as_str();
    if !data_dir.join("events.redb").exists() {
        bail!("no store in {}", data_dir.display());
    }
    let log = RedbLog::open(data_dir, RedbOptions::default(), Box::new(|_| {}))
        .with_context(|| format!("cannot open the store in {}", data_dir.display()))?;
    let mut next = from;
    let mut left = limit;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    use std::io::Write as _;
    let mut line = Vec::new();
    while left > 0 {
        let batch = log.read(
            broker,
            next,
            usize::try_from(left.min(1000)).unwrap_or(1000),
        )?;
        let Some(last) = batch.last() else { break };
        next = last.offset + 1;
        for record in &batch {
            let event = switchyard_core::store::decode(&record.event)?;
            line.clear();
            switchyard_core::json::encode_record_line(record.offset, &event, &mut line);
            out.write_all(&line)?;
            left -= 1;
        }
    }
    out.flush()?;
    log.shutdown();
    Ok(())
}
