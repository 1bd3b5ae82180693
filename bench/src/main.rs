//! `switchyard-bench`: the benchmark harness (bench/README.md).
//!
//! `switchyard-bench run` measures, in one invocation on one machine, a load generator and a
//! sink in this process against DIRECT (generator → sink) and SWITCHYARD (generator → the
//! real `switchyard` binary → sink) and the NATS peers ([`nats`]: NATS-BRIDGE, an HTTP →
//! JetStream → HTTP bridge run as `switchyard-bench nats-bridge`, and NATS-RAW) in the
//! workloads of `docs/benchmarks.md`, and writes JSON and Markdown with the ratios and the
//! targets. `switchyard-bench sink` is the measuring sink on its own, for runs driven by other
//! load generators (wrk). `switchyard-bench soak` runs mixed traffic with faults on a
//! schedule and reports loss, duplicates and resources over time ([`soak`]).

/// The allocator Switchyard uses, so NATS-BRIDGE (this binary) has the same HTTP stack as
/// SWITCHYARD down to it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod nats;
mod run;
mod soak;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Result;
use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::get;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "switchyard-bench")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// A measuring subscriber: `GET /stats` returns count, rate and arrival→delivery
    /// percentiles (from `knativearrivaltime`), and resets.
    Sink {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:9000")]
        listen: SocketAddr,
    },
    /// Run the workloads against DIRECT, SWITCHYARD and the NATS peers and report.
    Run(run::RunArgs),
    /// The JetStream engine with 1, 2 and 3 replicas beside DIRECT, the embedded mode and
    /// NATS-BRIDGE, on a nats-server of the run's own (docs/benchmarks.md).
    Jetstream(run::JetStreamArgs),
    /// The NATS-BRIDGE peer: HTTP → JetStream (202 after the stream's ack) → HTTP.
    NatsBridge(nats::BridgeArgs),
    /// One binary's memory, idle and under a steady load (docs/edge.md).
    Memory(run::MemoryArgs),
    /// Mixed traffic with faults on a schedule for half an hour; reports loss, duplicates,
    /// dead letters, memory and open files over time (docs/soak.md).
    Soak(soak::SoakArgs),
}

#[derive(Default)]
struct Stats {
    first: Option<Instant>,
    last: Option<Instant>,
    latencies_us: Vec<u64>,
}

type Shared = Arc<Mutex<Stats>>;

async fn deliver(State(stats): State<Shared>, headers: HeaderMap) {
    let now = chrono::Utc::now();
    let latency = headers
        .get("ce-knativearrivaltime")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| chrono::DateTime::parse_from_rfc3339(v).ok())
        .map(|t| {
            (now - t.with_timezone(&chrono::Utc))
                .num_microseconds()
                .unwrap_or(0)
        });
    let mut s = stats
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let at = Instant::now();
    s.first.get_or_insert(at);
    s.last = Some(at);
    if let Some(l) = latency {
        s.latencies_us.push(u64::try_from(l).unwrap_or(0));
    }
}

async fn stats(State(stats): State<Shared>) -> String {
    let mut s = std::mem::take(
        &mut *stats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    s.latencies_us.sort_unstable();
    let n = s.latencies_us.len();
    let pct = |p: f64| run::percentile(&s.latencies_us, p);
    let secs = match (s.first, s.last) {
        (Some(a), Some(b)) => (b - a).as_secs_f64(),
        _ => 0.0,
    };
    serde_json::json!({
        "deliveries": n,
        "rate_per_s": if secs > 0.0 { n as f64 / secs } else { 0.0 },
        "p50_us": pct(0.50), "p90_us": pct(0.90), "p99_us": pct(0.99), "max_us": pct(1.0),
    })
    .to_string()
        + "\n"
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match cli.command {
            Command::Sink { listen } => {
                let shared: Shared = Arc::default();
                let app = Router::new()
                    .route("/stats", get(stats))
                    .fallback(deliver)
                    .with_state(shared);
                let listener = tokio::net::TcpListener::bind(listen).await?;
                axum::serve(listener, app).await?;
                Ok(())
            }
            Command::Run(args) => run::run(args).await,
            Command::Jetstream(args) => run::jetstream(args).await,
            Command::NatsBridge(args) => nats::bridge(args).await,
            Command::Memory(args) => run::memory(args).await,
            Command::Soak(args) => soak::soak(args).await,
        }
    })
}
