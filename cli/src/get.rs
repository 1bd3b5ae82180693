//! `switchyard get …`: list resources of a running server over its management API.

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};

#[derive(Debug, Args)]
pub struct GetArgs {
    /// The server's base URL.
    #[arg(long, global = true, default_value = "http://127.0.0.1:8080")]
    server: String,
    /// Only this broker's types, as `namespace/name`.
    #[arg(long, global = true)]
    broker: Option<String>,
    /// The namespace to list when no `--broker` is given.
    #[arg(long, short, global = true, default_value = "default")]
    namespace: String,
    /// `table` for people, `json` for programs.
    #[arg(long, global = true, value_enum, default_value_t = Output::Table)]
    output: Output,
    #[command(subcommand)]
    command: GetCommand,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
enum GetCommand {
    /// Event types: configured EventTypes and those discovered at ingress (`record` mode).
    #[command(alias = "eventtype", alias = "et")]
    Eventtypes,
}

fn cell(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "-".to_owned(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn table(items: &[serde_json::Value]) -> String {
    let columns = [
        ("BROKER", "broker"),
        ("TYPE", "type"),
        ("SOURCE", "source"),
        ("ORIGIN", "origin"),
        ("NAME", "name"),
        ("COUNT", "count"),
        ("FIRST SEEN", "firstSeen"),
        ("LAST SEEN", "lastSeen"),
        ("SCHEMA", "schema"),
    ];
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|i| columns.iter().map(|(_, k)| cell(&i[*k])).collect())
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(c, (h, _))| {
            rows.iter()
                .map(|r| r[c].chars().count())
                .max()
                .unwrap_or(0)
                .max(h.len())
        })
        .collect();
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let text: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(text.join("  ").trim_end());
        out.push('\n');
    };
    line(columns.iter().map(|(h, _)| *h).collect(), &mut out);
    for r in &rows {
        line(r.iter().map(String::as_str).collect(), &mut out);
    }
    out
}

pub async fn run(args: GetArgs) -> Result<String> {
    let server = args.server.trim_end_matches('/');
    let url = match (&args.command, &args.broker) {
        (GetCommand::Eventtypes, Some(broker)) => {
            let Some((ns, name)) = broker.split_once('/') else {
                bail!("--broker must be namespace/name, not `{broker}`");
            };
            format!("{server}/api/v1/namespaces/{ns}/brokers/{name}/eventtypes")
        }
        (GetCommand::Eventtypes, None) => {
            format!("{server}/api/v1/namespaces/{}/eventtypes", args.namespace)
        }
    };
    let resp = reqwest::Client::new()
        .get(&url)
        .send()
        .await
        .with_context(|| format!("cannot reach the server at {}", args.server))?;
    let status = resp.status();
    let body = resp.bytes().await.context("reading the answer")?;
    let v: serde_json::Value = serde_json::from_slice(&body)
        .with_context(|| format!("the server answered {status} with a body that is not JSON"))?;
    if !status.is_success() {
        let detail = v["detail"].as_str().unwrap_or("no detail");
        bail!("the server answered {status}: {detail}");
    }
    Ok(match args.output {
        Output::Json => serde_json::to_string_pretty(&v).unwrap_or_default() + "\n",
        Output::Table => table(&v["items"].as_array().cloned().unwrap_or_default()),
    })
}
