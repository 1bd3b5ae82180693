//! `switchyard tail`: stream a broker's events as they are stored, with filters, from a running
//! server (`GET …/brokers/{broker}/events`).

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use switchyard_core::id::BrokerId;
use switchyard_core::resources::DEFAULT_NAMESPACE;

/// How each event is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TailOutput {
    /// One short line: offset, time, type, source, subject, id.
    Line,
    /// The stored event as a JSON line (`{"offset": N, "event": {…}}`).
    Json,
}

#[derive(Debug, Args)]
pub struct TailArgs {
    #[command(flatten)]
    auth: crate::client::TokenArg,
    /// The server's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    server: String,
    /// The broker, as `namespace/name` (or `name` in `default`).
    #[arg(long, default_value = "default/default")]
    broker: String,
    /// Start at the oldest stored event instead of with the next new one.
    #[arg(long, conflicts_with = "from")]
    from_beginning: bool,
    /// Start at this offset.
    #[arg(long)]
    from: Option<u64>,
    /// Only events of this `type`.
    #[arg(long = "type")]
    ty: Option<String>,
    /// Only events of this `source`.
    #[arg(long)]
    source: Option<String>,
    /// Only events this CESQL expression matches, e.g. `type LIKE 'com.amazonaws.s3.%'`.
    #[arg(long)]
    filter: Option<String>,
    /// Stop after this many events.
    #[arg(long, short = 'n')]
    limit: Option<u64>,
    /// Print what is stored now and stop, instead of waiting for new events.
    #[arg(long)]
    no_follow: bool,
    /// `line` (default) or `json`.
    #[arg(long, short, value_enum, default_value_t = TailOutput::Line)]
    output: TailOutput,
}

fn line(json: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
    let e = &v["event"];
    let s = |k: &str| e[k].as_str().unwrap_or("-").to_owned();
    format!(
        "{:>6}  {}  {}  {}  subject={}  id={}\n",
        v["offset"],
        s("time"),
        s("type"),
        s("source"),
        s("subject"),
        s("id")
    )
}

/// Streams until the server ends the stream (limit reached, `--no-follow`) or the user stops.
pub async fn run(args: TailArgs) -> Result<()> {
    let broker = if args.broker.contains('/') {
        crate::client::broker_arg(&args.broker)?
    } else {
        BrokerId::new(DEFAULT_NAMESPACE, &args.broker)
    };
    let url = format!(
        "{}/api/v1/namespaces/{}/brokers/{}/events",
        args.server.trim_end_matches('/'),
        broker.namespace(),
        broker.name()
    );
    let from = match (args.from_beginning, args.from) {
        (true, _) => "start".to_owned(),
        (false, Some(n)) => n.to_string(),
        (false, None) => "end".to_owned(),
    };
    let mut query: Vec<(&str, String)> =
        vec![("from", from), ("follow", (!args.no_follow).to_string())];
    if let Some(t) = args.ty {
        query.push(("type", t));
    }
    if let Some(s) = args.source {
        query.push(("source", s));
    }
    if let Some(f) = args.filter {
        query.push(("filter", f));
    }
    if let Some(n) = args.limit {
        query.push(("limit", n.to_string()));
    }
    let mut resp = args
        .auth
        .client()?
        .get(&url)
        .query(&query)
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    if !resp.status().is_success() {
        crate::client::answer(resp).await?;
        bail!("the server refused");
    }
    let mut pending: Vec<u8> = Vec::new();
    let stdout = std::io::stdout();
    while let Some(chunk) = resp.chunk().await.context("the stream broke off")? {
        pending.extend_from_slice(&chunk);
        while let Some(at) = pending.iter().position(|b| *b == b'\n') {
            let rest = pending.split_off(at + 1);
            let text = String::from_utf8_lossy(&pending[..at]).into_owned();
            pending = rest;
            if text.trim().is_empty() {
                // The server keeps a quiet stream alive with empty lines.
                continue;
            }
            let out = match args.output {
                TailOutput::Json => format!("{text}\n"),
                TailOutput::Line => line(&text),
            };
            use std::io::Write as _;
            let mut lock = stdout.lock();
            lock.write_all(out.as_bytes())?;
            lock.flush()?;
        }
    }
    Ok(())
}
