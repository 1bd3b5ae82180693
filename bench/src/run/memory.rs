//! `switchyard-bench memory`: what a switchyard binary holds in memory, idle and under a
//! steady open-loop load, with one match-all trigger to a local sink (docs/edge.md's
//! figures for the edge build).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::load::{Shape, open_loop};
use super::sink::{drain, start_sink};
use super::systems::{match_all, proc_usage, spawn_switchyard};

/// What to measure.
#[derive(Debug, clap::Args)]
pub struct MemoryArgs {
    /// The switchyard binary to measure (the edge build: target/edge/release/switchyard).
    #[arg(long, default_value = "target/release/switchyard")]
    switchyard: PathBuf,
    /// Events per second of the steady load.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Seconds of steady load.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Seconds idle before the idle figure is read.
    #[arg(long, default_value_t = 5)]
    idle_seconds: u64,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 256)]
    payload_bytes: usize,
    /// Extra `serve` arguments (the ceilings to run under), as one string split on spaces.
    #[arg(long, default_value = "")]
    serve_args: String,
}

/// Starts the binary, reads its RSS idle, then samples it every 250 ms under the load, and
/// prints idle, peak and last RSS with what was accepted and delivered (its output).
#[allow(clippy::print_stdout)]
pub async fn memory(args: MemoryArgs) -> Result<()> {
    let (sink, shared) = start_sink().await?;
    let config = match_all(1, &sink);
    let extra: Vec<String> = args
        .serve_args
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let dir = super::systems::tempfile_dir()?;
    std::fs::write(dir.join("config.yaml"), &config)?;
    let (child, base) = spawn_switchyard(&args.switchyard, &dir, true, &extra)?;
    let broker = super::systems::Broker { child, base, dir };
    let pid = broker.child.id();
    tokio::time::sleep(Duration::from_secs(args.idle_seconds)).await;
    let idle = proc_usage(pid).1;

    let peak = Arc::new(AtomicU64::new(idle));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (peak, stop) = (Arc::clone(&peak), Arc::clone(&stop));
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                peak.fetch_max(proc_usage(pid).1, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    let urls = vec![format!("{}/default/default", broker.base)];
    let started = Instant::now();
    let (accepted, _, failed) = open_loop(
        &urls,
        args.rate,
        args.seconds,
        &Shape::opaque(args.payload_bytes),
        &Arc::new(AtomicU64::new(0)),
    )
    .await;
    let sent_in = started.elapsed();
    drain(&shared, accepted).await;
    let under_load = proc_usage(pid).1;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = sampler.await;
    peak.fetch_max(under_load, std::sync::atomic::Ordering::Relaxed);
    let delivered = shared.lock().map_or(0, |s| s.count);
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "{}: idle {:.1} MiB; {:.0} events/s for {} s ({:.1} s): accepted {accepted}, failed {failed}, delivered {delivered}; peak {:.1} MiB, after {:.1} MiB",
        args.switchyard.display(),
        mib(idle),
        args.rate,
        args.seconds,
        sent_in.as_secs_f64(),
        mib(peak.load(std::sync::atomic::Ordering::Relaxed)),
        mib(under_load),
    );
    Ok(())
}
