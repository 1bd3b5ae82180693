//! The systems under test as real processes (Switchyard, NATS-BRIDGE), their configs, and
//! what /proc says of their CPU and memory; the fsync probe.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use super::*;

/// The pid of the machine's `nats-server`, whose CPU and memory are part of NATS-BRIDGE's.
pub(super) fn nats_server_pid() -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid = e.file_name().to_str()?.parse::<u32>().ok()?;
        let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
        (comm.trim() == "nats-server").then_some(pid)
    })
}

/// CPU time (user + system, seconds) and RSS (bytes) summed over processes.
pub(super) fn usage_of(pids: &[u32]) -> (f64, u64) {
    pids.iter()
        .map(|p| proc_usage(*p))
        .fold((0.0, 0), |(c, r), (c2, r2)| (c + c2, r + r2))
}

/// `/proc/<pid>` CPU time (user + system) in seconds, and RSS in bytes.
pub(crate) fn proc_usage(pid: u32) -> (f64, u64) {
    let ticks = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let after = s.rsplit_once(')')?.1;
            let f: Vec<&str> = after.split_whitespace().collect();
            Some(f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?)
        })
        .unwrap_or(0.0);
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .unwrap_or(0);
    (ticks / 100.0, rss * 1024)
}

pub(super) fn fsync_probe(size: usize, n: usize) -> Result<(u64, u64)> {
    use std::io::Write as _;
    let dir = tempfile_dir()?;
    let path = dir.join("probe");
    let mut f = std::fs::File::create(&path)?;
    let buf = vec![7u8; size];
    let mut us = Vec::with_capacity(n);
    for _ in 0..n {
        f.write_all(&buf)?;
        let t = Instant::now();
        f.sync_data()?;
        us.push(u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX));
    }
    let _ = std::fs::remove_dir_all(&dir);
    us.sort_unstable();
    Ok((percentile(&us, 0.5), percentile(&us, 0.99)))
}

/// The disk's sequential write rate for durable writes, in MB/s: 1 MiB writes, each followed
/// by an `fdatasync`, for 256 MiB or 5 s, whichever comes first (the physical limit of
/// durable ingest of large events).
pub(super) fn disk_write_probe() -> Result<f64> {
    use std::io::Write as _;
    let dir = tempfile_dir()?;
    let mut f = std::fs::File::create(dir.join("probe"))?;
    let buf = vec![7u8; 1 << 20];
    let started = Instant::now();
    let mut written = 0u64;
    while written < 256 << 20 && started.elapsed().as_secs() < 5 {
        f.write_all(&buf)?;
        f.sync_data()?;
        written += buf.len() as u64;
    }
    let seconds = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(written as f64 / 1e6 / seconds)
}

pub(crate) fn tempfile_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "switchyard-bench-{}-{}",
        std::process::id(),
        now_us()
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A system under test running as its own process, killed (and its data removed) on drop.
pub(super) struct Broker {
    pub(super) child: Child,
    pub(super) base: String,
    pub(super) dir: PathBuf,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A config: the Broker `default` and `triggers` match-all Triggers delivering to
/// `{sink}t{i}`.
pub(super) fn match_all(triggers: usize, sink: &str) -> String {
    let mut config = BROKER.to_owned();
    for i in 0..triggers {
        config.push_str(&trigger(&format!("t{i}"), "", &format!("{sink}t{i}"), ""));
    }
    config
}

pub(super) const BROKER: &str =
    "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: default}\n";

/// One Trigger document; `filter` and `extra` are spec fields (`filter: {…}, `), may be empty.
pub(super) fn trigger(name: &str, filter: &str, uri: &str, extra: &str) -> String {
    format!(
        "---\napiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {{name: {name}}}\nspec: {{broker: default, {filter}{extra}subscriber: {{uri: '{uri}'}}}}\n"
    )
}

pub(super) fn start_switchyard(bin: &PathBuf, config: &str, fsync: bool) -> Result<Broker> {
    let dir = tempfile_dir()?;
    std::fs::write(dir.join("config.yaml"), config)?;
    let (child, base) = spawn_switchyard(bin, &dir, fsync, &[])?;
    Ok(Broker { child, base, dir })
}

/// Starts `switchyard serve` on `dir` (its config.yaml and data/) with `extra` arguments; the
/// child and its base URL.
pub(super) fn spawn_switchyard(
    bin: &PathBuf,
    dir: &std::path::Path,
    fsync: bool,
    extra: &[String],
) -> Result<(Child, String)> {
    use std::io::BufRead as _;
    let mut cmd = Command::new(bin);
    cmd.arg("serve")
        .arg("--config")
        .arg(dir.join("config.yaml"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["--listen", "127.0.0.1:0"])
        .args(extra)
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped());
    if !fsync {
        cmd.arg("--no-fsync");
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut line = String::new();
    std::io::BufReader::new(stdout).read_line(&mut line)?;
    let Some(base) = line.trim().strip_prefix("switchyard listening on ") else {
        bail!("unexpected first line from switchyard: {line:?}");
    };
    Ok((child, base.to_owned()))
}

/// Starts the NATS-BRIDGE peer (this binary's `nats-bridge`) delivering to `sink`.
pub(super) fn start_nats_bridge(nats: &str, sink: &str) -> Result<Broker> {
    use std::io::BufRead as _;
    let dir = tempfile_dir()?;
    let mut child = Command::new(std::env::current_exe()?)
        .args(["nats-bridge", "--nats", nats, "--sink", sink])
        .arg("--stream")
        .arg(format!("BENCHBRIDGE{}", std::process::id()))
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start the NATS bridge")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut line = String::new();
    std::io::BufReader::new(stdout).read_line(&mut line)?;
    let Some(base) = line.trim().strip_prefix("nats-bridge listening on ") else {
        bail!("the NATS bridge did not start: {line:?}");
    };
    Ok(Broker {
        child,
        base: base.to_owned(),
        dir,
    })
}
