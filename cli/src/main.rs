//! `switchyard`: the broker binary and the operator's commands; `serve` is [`switchyard::run`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use switchyard::{AuthOptions, AuthorizationMode, Clock, RedbOptions, ServerOptions};
use switchyard_broker::RedbLog;
use switchyard_broker::connections::ConnectionLimits;
use switchyard_broker::log::EventLog;
use switchyard_broker::server::DEFAULT_BODY_LIMIT_BYTES;

/// mimalloc instead of glibc's malloc: the delivery path allocates per event (HTTP requests,
/// headers, decoded events), and glibc's allocator took a fifth of the server's CPU in a
/// profile of one-trigger delivery (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod client;
mod display;
mod dlq;
mod get;
mod monitoring;
mod progress;
mod replay;
mod send;
mod tail;
mod validate;

/// `switchyard --version`: the version, then the optional parts the sources crate was built
/// with (the edge build, `--no-default-features`, has none of them; docs/edge.md). Read from
/// that crate, so a build whose features cargo unified with another package's says what it
/// holds.
fn long_version() -> &'static str {
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TEXT.get_or_init(|| {
        format!(
            "{}\nfeatures: {}",
            env!("CARGO_PKG_VERSION"),
            switchyard_adapters::FEATURES
        )
    })
}

#[derive(Debug, Parser)]
#[command(
    name = "switchyard",
    version,
    long_version = long_version(),
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
        /// A YAML/JSON file, or a directory of them, with Broker, Trigger, Sink and EventType
        /// resources; reloaded when it changes, on SIGHUP and on `POST /api/v1/reload`.
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
        /// Event bytes that may wait for the store before ingress answers 503.
        #[arg(long, default_value_t = RedbOptions::default().queue_max_bytes)]
        queue_max_bytes: usize,
        /// Client connections served at once; past it new ones wait until one closes (lowered
        /// to what the open-file limit allows).
        #[arg(long, default_value_t = ConnectionLimits::default().max_connections)]
        max_connections: usize,
        /// How long a client has to send a request's headers, in ms; also how long a
        /// kept-alive connection may sit idle between requests.
        #[arg(long, default_value_t = ConnectionLimits::default().header_read_timeout.as_millis() as u64)]
        header_read_timeout_ms: u64,
        /// How long a request's whole body may take to arrive once its headers have, in ms;
        /// past it the request is answered 408 and nothing of it is stored.
        #[arg(long, default_value_t = ConnectionLimits::default().body_read_timeout.as_millis() as u64)]
        body_read_timeout_ms: u64,
        /// After SIGTERM, how long to keep taking requests while `/readyz` says the server is
        /// shutting down, in ms, so that a load balancer stops sending first (0: stop at once).
        #[arg(long, default_value_t = ConnectionLimits::default().shutdown_drain.as_millis() as u64)]
        shutdown_drain_ms: u64,
        /// How long audit entries are kept, in days (0: for ever).
        #[arg(long, default_value_t = 90)]
        audit_max_age_days: u64,
        /// Free space to keep on the data directory's disk: below it, events are refused
        /// with 507 and `/readyz` is 503, while delivery goes on (0: no reserve).
        #[arg(long, default_value_t = RedbOptions::default().min_free_disk_bytes)]
        min_free_disk_bytes: u64,
        /// The most event bytes the embedded store holds, all Brokers together (0: no
        /// budget): past nine tenths of it delivered events are deleted, oldest first; an
        /// event that would take it past is refused with 507 while undelivered ones fill it.
        #[arg(long, default_value_t = 0)]
        max_store_bytes: u64,
        /// Do not fsync commits. Only for benchmarks: a crash then loses the events accepted
        /// since the last checkpoint.
        #[arg(long)]
        no_fsync: bool,
        /// How often the store's file is made durable (a checkpoint), in ms; commits between
        /// two are durable in the write-ahead log.
        #[arg(long, default_value_t = RedbOptions::default().checkpoint_interval.as_millis() as u64)]
        checkpoint_interval_ms: u64,
        /// Size of each write-ahead log segment, in bytes.
        #[arg(long, default_value_t = RedbOptions::default().wal_segment_bytes)]
        wal_segment_bytes: u64,
        /// Serve on an address other than loopback although no Identity or TokenIssuer is
        /// configured, so that anyone who reaches it may send, read and redrive.
        #[arg(long)]
        allow_unauthenticated: bool,
        /// Who may send to a Broker no EventPolicy applies to, once callers are
        /// authenticated: allow-same-namespace, allow-all or deny-all (Knative's
        /// default-authorization-mode).
        #[arg(long, default_value = "allow-same-namespace", value_parser = parse_mode)]
        default_authorization_mode: AuthorizationMode,
        /// A URL prefix a dead-letter redrive may send to besides the triggers' own
        /// subscribers and dead-letter sinks (repeatable).
        #[arg(long = "redrive-allow-uri")]
        redrive_allow_uris: Vec<String>,
        /// Serve HTTPS with this certificate chain (PEM, the server's certificate first);
        /// read again when it or the key changes.
        #[arg(long, requires = "tls_key_file")]
        tls_cert_file: Option<PathBuf>,
        /// The private key of --tls-cert-file (PEM).
        #[arg(long, requires = "tls_cert_file")]
        tls_key_file: Option<PathBuf>,
        /// Require every client to present a certificate signed by one of these CAs (PEM).
        #[arg(long, requires = "tls_cert_file")]
        tls_client_ca_file: Option<PathBuf>,
        /// Refuse to deliver (subscribers, dead-letter sinks, redrives) to loopback, private,
        /// link-local (cloud metadata) and other internal addresses, whatever the name
        /// resolves to at the time.
        #[arg(long)]
        deny_internal_destinations: bool,
        /// An address range (`10.1.0.0/16`, `fd00::/8`, an address) allowed all the same
        /// with --deny-internal-destinations (repeatable).
        #[arg(long = "egress-allow", value_parser = parse_range, requires = "deny_internal_destinations")]
        egress_allow: Vec<switchyard_core::egress::IpRange>,
        /// Keep events in NATS JetStream instead of the embedded store, so that any number
        /// of replicas with the same configuration share them: the servers' URLs,
        /// comma-separated (spec/jetstream.md).
        #[arg(long, value_delimiter = ',')]
        jetstream: Vec<String>,
        /// Copies JetStream keeps of each broker's stream: 1, 3 or 5.
        #[arg(long, default_value_t = 1, requires = "jetstream")]
        jetstream_replicas: usize,
        /// Partition subjects of each broker's stream: how many `partitionkey`s an ordered
        /// trigger delivers at once. Fixed when the stream is created; every replica must
        /// use the same.
        #[arg(long, default_value_t = switchyard_broker::jetstream::DEFAULT_PARTITIONS, requires = "jetstream")]
        jetstream_partitions: u32,
        /// This replica's name among the others (default: `{hostname}-{port}`): the suffix
        /// of its MQTT client ids. Stable names keep MQTT sessions across restarts.
        #[arg(long, value_parser = parse_replica_id, requires = "jetstream")]
        replica_id: Option<String>,
        /// How the log lines on stderr are written: `text`, or `json` (one object per line,
        /// for a log collector). `RUST_LOG` chooses which lines (default `info`).
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
    /// Check a configuration and print what it defines.
    Validate {
        /// A YAML/JSON file, or a directory of them.
        #[arg(long, short)]
        config: PathBuf,
        /// Refuse what would load without effect (skipped documents, ignored fields).
        #[arg(long)]
        strict: bool,
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
    /// List a running server's resources with their status: triggers, brokers, sources,
    /// eventtypes.
    Get(get::GetArgs),
    /// Show one resource in full: configuration, conditions, figures, and for a trigger its
    /// recent dead letters with every attempt.
    Describe(get::DescribeArgs),
    /// Pause a trigger: routed events and retries wait, nothing is attempted or
    /// dead-lettered, until it is resumed (kept across restarts).
    Pause(get::PauseArgs),
    /// Resume a paused trigger: it delivers what waited, in order.
    Resume(get::PauseArgs),
    /// Re-deliver a broker's stored events in a range to one trigger, as a job with a
    /// preview, a rate, progress and cancel.
    Replay(replay::ReplayArgs),
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
    /// Ask a running server whether it is alive (`/healthz`) or ready (`/readyz`, with
    /// `--ready`): exits 0 when it answers 200, 1 with one line saying why otherwise. For a
    /// container's health check, which needs no shell or curl this way.
    Healthcheck {
        /// The server's base URL.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        server: String,
        /// Ask `/readyz` (store writable, configuration loaded) instead of `/healthz`.
        #[arg(long)]
        ready: bool,
        /// How long to wait for the answer, in milliseconds.
        #[arg(long, default_value_t = 3000)]
        timeout_ms: u64,
        #[command(flatten)]
        auth: client::TokenArg,
    },
    /// Print the Prometheus alert rules or the Grafana dashboard for Switchyard's metrics
    /// (kept in deploy/monitoring/; see docs/observability.md).
    Monitoring {
        /// Which: `alerts` (a Prometheus rule file), `dashboard` (Grafana JSON) or `queries`
        /// (the dashboard's PromQL, one per line).
        #[arg(value_enum)]
        what: MonitoringOutput,
    },
    /// Run a subscriber that prints every CloudEvent it receives, one line each (like
    /// Knative's event_display), to watch what a Trigger delivers.
    Display {
        /// The address to listen on.
        #[arg(long, default_value = "127.0.0.1:9091")]
        listen: std::net::SocketAddr,
    },
}

/// What `switchyard monitoring` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum MonitoringOutput {
    /// Prometheus alert rules (YAML).
    Alerts,
    /// A Grafana dashboard (JSON).
    Dashboard,
    /// The dashboard's queries, one per line: the panel's title, a tab, the PromQL.
    Queries,
}

/// How `serve` writes its log lines to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// One line of text per event, coloured only on a terminal.
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `message`, the event's own
    /// fields beside them, and the spans it happened in.
    Json,
}

/// A replica's name: letters, digits, `.`, `_` and `-`, at most 64 (it goes into client
/// ids).
fn parse_replica_id(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(s.to_owned())
    } else {
        Err("a replica id is 1 to 64 letters, digits, '.', '_' or '-'".to_owned())
    }
}

fn parse_range(text: &str) -> Result<switchyard_core::egress::IpRange, String> {
    switchyard_core::egress::IpRange::parse(text)
}

fn parse_mode(text: &str) -> Result<AuthorizationMode, String> {
    AuthorizationMode::parse(text).ok_or_else(|| {
        format!("`{text}` is not a mode: use allow-same-namespace, allow-all or deny-all")
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if JSON_LOGS.get().is_some() {
                // A log collector reading JSON lines gets the reason as one of them.
                tracing::error!(error = %format!("{e:#}"), "switchyard stopped");
            } else {
                #[allow(clippy::print_stderr)]
                {
                    eprintln!("switchyard: {e:#}");
                }
            }
            ExitCode::FAILURE
        }
    }
}

/// Set once `serve` logs as JSON, so that its last word (why it stopped) is JSON too.
static JSON_LOGS: std::sync::OnceLock<()> = std::sync::OnceLock::new();

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let lines = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        // Colours only for a terminal: a log file or a journal gets plain text.
        LogFormat::Text => lines
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        // The event's fields beside `message`, not nested, as log collectors index them.
        LogFormat::Json => {
            lines.json().flatten_event(true).init();
            let _ = JSON_LOGS.set(());
        }
    }
    // A panic is a bug, but it is logged as one line like every other error (a library's
    // panic on a damaged store file is caught and reported by the caller); the standard
    // report, with its backtrace, only when RUST_BACKTRACE asks for it.
    let standard = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        tracing::error!(panic = %info, "panicked");
        if std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0") {
            standard(info);
        }
    }));
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
            queue_max_bytes,
            audit_max_age_days,
            max_connections,
            header_read_timeout_ms,
            body_read_timeout_ms,
            shutdown_drain_ms,
            min_free_disk_bytes,
            max_store_bytes,
            no_fsync,
            checkpoint_interval_ms,
            wal_segment_bytes,
            allow_unauthenticated,
            default_authorization_mode,
            redrive_allow_uris,
            tls_cert_file,
            tls_key_file,
            tls_client_ca_file,
            deny_internal_destinations,
            egress_allow,
            jetstream,
            jetstream_replicas,
            jetstream_partitions,
            replica_id,
            log_format,
        } => {
            if max_store_bytes > 0 && !jetstream.is_empty() {
                bail!(
                    "--max-store-bytes is the embedded store's budget; on JetStream, a Broker's \
                     `retention.maxBytes` bounds its stream"
                );
            }
            for prefix in &redrive_allow_uris {
                switchyard_triggers::api::redrive_prefix(prefix)
                    .map_err(|e| anyhow::anyhow!("--redrive-allow-uri: {e}"))?;
            }
            init_tracing(log_format);
            if allow_unauthenticated && !listen.ip().is_loopback() {
                tracing::warn!(%listen, "--allow-unauthenticated: whoever reaches this address may send, read, redrive and purge unless an Identity or TokenIssuer is configured");
            }
            let path = config;
            let audit_max_age = (audit_max_age_days > 0)
                .then(|| Duration::from_secs(audit_max_age_days.saturating_mul(24 * 3600)));
            let options = ServerOptions {
                listen,
                data_dir,
                max_body_bytes,
                store: RedbOptions {
                    cache_size_bytes,
                    queue_capacity,
                    queue_max_bytes,
                    min_free_disk_bytes,
                    max_store_bytes,
                    audit_max_age,
                    fsync: !no_fsync,
                    checkpoint_interval: Duration::from_millis(checkpoint_interval_ms.max(1)),
                    wal_segment_bytes,
                    ..RedbOptions::default()
                },
                jetstream: (!jetstream.is_empty()).then_some(
                    switchyard_broker::jetstream::JetStreamOptions {
                        servers: jetstream,
                        replicas: jetstream_replicas,
                        partitions: jetstream_partitions,
                        replica_id,
                        audit_max_age,
                    },
                ),
                auth: AuthOptions {
                    default_mode: default_authorization_mode,
                    allow_unauthenticated,
                    redrive_allow_uris,
                    ..AuthOptions::default()
                },
                connections: ConnectionLimits {
                    max_connections,
                    header_read_timeout: Duration::from_millis(header_read_timeout_ms),
                    body_read_timeout: Duration::from_millis(body_read_timeout_ms),
                    shutdown_drain: Duration::from_millis(shutdown_drain_ms),
                },
                egress: switchyard_core::egress::EgressPolicy {
                    deny_internal: deny_internal_destinations,
                    allow: egress_allow,
                },
                tls: tls_cert_file
                    .zip(tls_key_file)
                    .map(|(cert_file, key_file)| switchyard_broker::tls::TlsOptions {
                        cert_file,
                        key_file,
                        client_ca_file: tls_client_ca_file,
                    }),
            };
            // Traces, when the OTEL_* variables ask for them: set up before the runtime (the
            // exporter has a thread of its own) and flushed after it.
            let traces = switchyard_broker::traces::init_from_env()?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            let served = runtime.block_on(serve(path, options));
            // Bounded, so that a stuck blocking task cannot hold back the last spans.
            runtime.shutdown_timeout(std::time::Duration::from_secs(10));
            if let Some(traces) = traces {
                traces.shutdown();
            }
            served
        }
        Command::Validate { config, strict } => {
            print_out(&validate::run(&config, strict)?);
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
            print_out(&validate::explain(&config, &trigger, &event)?);
            Ok(())
        }
        Command::Get(args) => print_out_of(get::run(args)),
        Command::Describe(args) => print_out_of(get::describe(args)),
        Command::Pause(args) => print_out_of(get::pause(args, false)),
        Command::Resume(args) => print_out_of(get::pause(args, true)),
        Command::Replay(args) => print_out_of(replay::run(args)),
        Command::Tail(args) => client_runtime()?.block_on(tail::run(args)),
        Command::Send(args) => print_out_of(send::run(args)),
        Command::Dlq(args) => print_out_of(dlq::run(args)),
        Command::Display { listen } => client_runtime()?.block_on(display::run(listen)),
        Command::Healthcheck {
            server,
            ready,
            timeout_ms,
            auth,
        } => print_out_of(healthcheck(&server, ready, timeout_ms, &auth)),
        Command::Monitoring { what } => {
            print_out(&match what {
                MonitoringOutput::Alerts => monitoring::alert_rules(),
                MonitoringOutput::Dashboard => monitoring::dashboard(),
                MonitoringOutput::Queries => monitoring::queries(),
            });
            Ok(())
        }
    }
}

/// `healthcheck`: the server's `/healthz` (or `/readyz`) answered 200, or why not.
async fn healthcheck(
    server: &str,
    ready: bool,
    timeout_ms: u64,
    auth: &client::TokenArg,
) -> Result<String> {
    let url = format!(
        "{}/{}",
        server.trim_end_matches('/'),
        if ready { "readyz" } else { "healthz" }
    );
    let answer = auth
        .client()?
        .get(&url)
        .timeout(std::time::Duration::from_millis(timeout_ms))
        .send()
        .await
        .with_context(|| format!("not healthy: no answer from {url}"))?;
    let status = answer.status();
    let body = answer.text().await.unwrap_or_default();
    let first = body.lines().next().unwrap_or_default().trim();
    anyhow::ensure!(
        status.is_success(),
        "not {}: {url} answered {status}{}",
        if ready { "ready" } else { "healthy" },
        if first.is_empty() {
            String::new()
        } else {
            format!(": {first}")
        }
    );
    Ok(format!("{url}: {status}\n"))
}

/// The runtime of a command that talks to a running server: one thread is plenty.
fn client_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Runs a client command and prints what it returns.
fn print_out_of(command: impl std::future::Future<Output = Result<String>>) -> Result<()> {
    let out = client_runtime()?.block_on(command)?;
    print_out(&out);
    Ok(())
}

/// Writes `text` to standard error (what a command says beside its output: a preview, its
/// progress).
#[allow(clippy::print_stderr)]
fn print_err(text: &str) {
    eprint!("{text}");
}

#[allow(clippy::print_stdout)]
fn print_out(text: &str) {
    print!("{text}");
}

async fn serve(path: std::path::PathBuf, options: ServerOptions) -> Result<()> {
    let clock = Clock::for_serve().map_err(anyhow::Error::msg)?;
    let scheme = if options.tls.is_some() {
        "https"
    } else {
        "http"
    };
    switchyard::run_watching(
        path,
        options,
        clock,
        move |addr| print_out(&format!("switchyard listening on {scheme}://{addr}\n")),
        shutdown_signal(),
    )
    .await?;
    Ok(())
}

/// Resolves at SIGTERM or Ctrl-C (SIGINT). The handlers are installed when this is called,
/// not when the future is first polled: the server polls it only once it serves, and a
/// SIGTERM in between (an orchestrator stopping a pod that just started) must stop it
/// gracefully, not kill it by the signal's default action.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        // Each on its own: one that cannot be listened for never fires, the other still does.
        let listen = |kind: SignalKind, name: &'static str| {
            let stream = signal(kind);
            if let Err(e) = &stream {
                tracing::warn!(error = %e, "cannot listen for {name}; it will not stop the server");
            }
            async move {
                match stream {
                    Ok(mut s) => {
                        s.recv().await;
                    }
                    Err(_) => std::future::pending::<()>().await,
                }
            }
        };
        let (term, int) = (
            listen(SignalKind::terminate(), "SIGTERM"),
            listen(SignalKind::interrupt(), "SIGINT"),
        );
        async move {
            tokio::select! {
                () = term => {}
                () = int => {}
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
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
