//! `switchyard-bench soak`: mixed traffic against one `switchyard serve` for half an hour,
//! with faults on a schedule — `kill -9` of the server, a subscriber flapping between 200,
//! 503, timeouts and refused connections, a full disk for a minute, bursts of malformed
//! input and slow connections — then a drain, and a report of what was acknowledged against
//! what was delivered or dead-lettered, duplicates, and the server's memory, open file
//! descriptors and store size over time (docs/soak.md). Not part of the test command.

mod disk;
mod report;
mod server;
mod sink;
mod traffic;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::{Value, json};

use disk::Disk;
use server::Server;
use sink::{Mode, Sink};
use traffic::Generator;

#[derive(Debug, clap::Args)]
pub struct SoakArgs {
    /// The switchyard binary under test.
    #[arg(long, default_value = "target/release/switchyard")]
    switchyard: PathBuf,
    /// How long the traffic and the faults run, in seconds (the drain afterwards is extra).
    #[arg(long, default_value_t = 1800)]
    seconds: u64,
    /// Events offered per second (docs/soak.md says why the default is half the knee).
    #[arg(long, default_value_t = 2500)]
    rate: u64,
    /// Size of the file system the store lives on: a loop-mounted ext4 image (needs root;
    /// without it the store is on the temporary directory and the full-disk fault is left out).
    #[arg(long, default_value_t = 4096)]
    disk_mib: u64,
    /// Where the JSON and Markdown reports go.
    #[arg(long, default_value = "bench/results")]
    out_dir: PathBuf,
}

/// When each fault happens, in seconds from the start of the traffic.
#[derive(Debug, Clone, serde::Serialize)]
struct Schedule {
    seconds: u64,
    /// The subscriber is healthy until then (and the server's memory is warming up).
    warmup_s: u64,
    kill_at_s: Vec<u64>,
    disk_full_at_s: u64,
    disk_full_for_s: u64,
    malformed_at_s: Vec<u64>,
    malformed_for_s: u64,
}

impl Schedule {
    fn new(seconds: u64) -> Schedule {
        let at = |f: f64| (seconds as f64 * f) as u64;
        Schedule {
            seconds,
            warmup_s: (seconds / 10).min(120),
            kill_at_s: vec![at(0.35), at(0.7)],
            disk_full_at_s: at(0.5),
            disk_full_for_s: (seconds / 5).min(60),
            malformed_at_s: vec![at(0.2), at(0.6), at(0.85)],
            malformed_for_s: 10,
        }
    }

    /// The subscriber's behaviour at second `t`: after the warm-up, a two-minute cycle of
    /// 50 s healthy, 15 s 503, 20 s healthy, 15 s too slow (past the trigger's timeout), 10 s
    /// healthy and 10 s refusing connections; healthy again once the traffic stops.
    fn mode(&self, t: u64) -> Mode {
        if t < self.warmup_s || t >= self.seconds {
            return Mode::Healthy;
        }
        match (t - self.warmup_s) % 120 {
            50..65 => Mode::Unavailable,
            85..100 => Mode::Slow,
            110..120 => Mode::Refused,
            _ => Mode::Healthy,
        }
    }
}

/// The broker and triggers under test: `all` takes every event and has a dead-letter sink,
/// `orders` one in five; both retry for minutes (so only a refusal dead-letters) with a 2 s
/// timeout; events are kept three minutes, so retention runs all the time.
fn config(sink: &str) -> String {
    let delivery = "retry: 60, backoffPolicy: exponential, backoffDelay: PT0.2S, backoffMax: PT5S, timeout: PT2S";
    format!(
        "apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: default}}
spec:
  retention: {{maxAge: PT3M}}
  delivery: {{{delivery}}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: all}}
spec:
  broker: default
  subscriber: {{uri: '{sink}all'}}
  delivery: {{{delivery}, deadLetterSink: {{uri: '{sink}dls'}}}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: orders}}
spec:
  broker: default
  filter: {{attributes: {{type: {order}}}}}
  subscriber: {{uri: '{sink}orders'}}
",
        order = traffic::ORDER_TYPE,
    )
}

/// Logs one line of progress on stderr.
fn progress(line: &str) {
    #[allow(clippy::print_stderr)]
    {
        eprintln!("soak: {line}");
    }
}

pub async fn soak(args: SoakArgs) -> Result<()> {
    let schedule = Schedule::new(args.seconds);
    let dir = crate::run::tempfile_dir()?;
    let disk = Disk::prepare(&dir, args.disk_mib)?;
    if let Some(why) = &disk.no_full_disk {
        progress(&format!("no full-disk fault: {why}"));
    }
    let mut sink = Sink::start().await?;
    std::fs::write(dir.join("config.yaml"), config(&sink.url()))?;
    let mut server = Server::start(&args.switchyard, &dir, &disk.data_dir)?;
    let started = Instant::now();
    let generator = Generator::start(&server.base, args.rate);
    let samples = server::Sampler::start(
        Arc::clone(&server.pid),
        disk.data_dir.clone(),
        server.base.clone(),
        Arc::clone(&generator.counters),
        Arc::clone(&sink.state),
        started,
    );
    progress(&format!(
        "{} s of traffic at {}/s against {}, report in {}",
        args.seconds,
        args.rate,
        server.base,
        args.out_dir.display()
    ));

    let mut restarts = Vec::new();
    let mut malformed = Vec::new();
    let mut bursts = tokio::task::JoinSet::new();
    let mut disk_full: Option<Value> = None;
    let mut filled_at: Option<Instant> = None;
    let mut t = 0;
    while t < args.seconds {
        let next = started + Duration::from_secs(t + 1);
        sink.set_mode(schedule.mode(t)).await;
        if schedule.kill_at_s.contains(&t) {
            restarts.push(server.kill_and_restart().await?);
            progress(&format!("t={t} s: kill -9 and restart"));
        }
        if schedule.malformed_at_s.contains(&t) {
            progress(&format!("t={t} s: malformed burst"));
            let base = server.base.clone();
            let secs = schedule.malformed_for_s;
            bursts.spawn(async move { traffic::malformed_burst(&base, secs).await });
        }
        if t == schedule.disk_full_at_s && disk.no_full_disk.is_none() {
            let left = disk.fill()?;
            progress(&format!("t={t} s: disk full ({left} bytes left)"));
            filled_at = Some(Instant::now());
            disk_full = Some(json!({"at_s": t, "bytes_left": left}));
        }
        if let Some(at) = filled_at
            && at.elapsed() >= Duration::from_secs(schedule.disk_full_for_s)
        {
            disk.free()?;
            filled_at = None;
            progress(&format!("t={t} s: disk space back"));
        }
        while let Some(r) = bursts.try_join_next() {
            malformed.push(r?);
        }
        if t % 60 == 59 {
            progress(&samples.last_line());
        }
        tokio::time::sleep_until(next.into()).await;
        t += 1;
    }
    if filled_at.is_some() {
        disk.free()?;
    }
    sink.set_mode(Mode::Healthy).await;
    while let Some(r) = bursts.join_next().await {
        malformed.push(r?);
    }
    progress("traffic stopped; waiting for the producers' last retries");
    let counters = Arc::clone(&generator.counters);
    generator.stop().await;
    progress("draining");
    let drain_started = Instant::now();
    let dead_letters_url = format!(
        "{}/api/v1/namespaces/default/brokers/default/deadletters",
        server.base
    );
    let mut outcome = report::Outcome::default();
    while drain_started.elapsed() < Duration::from_secs(600) {
        let dead = report::dead_letters(&dead_letters_url).await?;
        outcome = report::Outcome::compute(&counters, &sink.state, &dead);
        if outcome.missing == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let drain_s = drain_started.elapsed().as_secs_f64();
    let samples = samples.stop().await;
    let mut restarted = Vec::new();
    for r in restarts {
        restarted.push(r.await?);
    }
    drop(server);
    drop(disk);
    let result = json!({
        "switchyard": args.switchyard,
        "rate_per_s": args.rate,
        "schedule": schedule,
        "drain_s": drain_s,
        "restarts": restarted,
        "disk_full": disk_full,
        "malformed": malformed,
        "traffic": counters.summary(),
        "outcome": outcome,
        "samples": samples,
    });
    report::write(&args.out_dir, &result)?;
    if outcome.missing > 0 {
        anyhow::bail!(
            "{} acknowledged deliveries neither delivered nor dead-lettered",
            outcome.missing
        );
    }
    Ok(())
}
