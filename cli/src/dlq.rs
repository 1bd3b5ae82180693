//! `switchyard dlq …`: the dead-letter store of a running server, over its management API.

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};

use crate::client::{Output, answer, cell, pretty, table};
use crate::progress::Progress;

#[derive(Debug, Args)]
pub struct DlqArgs {
    #[command(flatten)]
    auth: crate::client::TokenArg,
    /// The server's base URL.
    #[arg(long, global = true, default_value = "http://127.0.0.1:8080")]
    server: String,
    /// The broker, as `namespace/name`.
    #[arg(long, global = true, default_value = "default/default")]
    broker: String,
    /// `table` for people, `json` for programs.
    #[arg(long, global = true, value_enum, default_value_t = Output::Table)]
    output: Output,
    #[command(subcommand)]
    command: DlqCommand,
}

#[derive(Debug, Args, Default)]
struct Filter {
    /// Only this trigger's dead letters.
    #[arg(long)]
    trigger: Option<String>,
    /// Only events of this type.
    #[arg(long = "type")]
    ty: Option<String>,
    /// Only events from this source.
    #[arg(long)]
    source: Option<String>,
    /// Only those whose last answer had this HTTP status.
    #[arg(long)]
    status: Option<u16>,
    /// Only those dead-lettered at or after this RFC 3339 time.
    #[arg(long)]
    since: Option<String>,
    /// Only those dead-lettered before this RFC 3339 time.
    #[arg(long)]
    until: Option<String>,
}

impl Filter {
    fn query(&self) -> Vec<(&'static str, String)> {
        let mut q = Vec::new();
        let mut add = |k: &'static str, v: Option<String>| {
            if let Some(v) = v {
                q.push((k, v));
            }
        };
        add("trigger", self.trigger.clone());
        add("type", self.ty.clone());
        add("source", self.source.clone());
        add("status", self.status.map(|s| s.to_string()));
        add("since", self.since.clone());
        add("until", self.until.clone());
        q
    }

    fn json(&self) -> serde_json::Value {
        self.query()
            .into_iter()
            .map(|(k, v)| {
                let v = if k == "status" {
                    serde_json::Value::from(v.parse::<u16>().unwrap_or(0))
                } else {
                    serde_json::Value::from(v)
                };
                (k.to_owned(), v)
            })
            .collect::<serde_json::Map<_, _>>()
            .into()
    }
}

#[derive(Debug, Subcommand)]
enum DlqCommand {
    /// List dead letters (newest last), with filters.
    List {
        #[command(flatten)]
        filter: Filter,
        /// The most to list.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Start after this id (for the next page).
        #[arg(long)]
        after: Option<String>,
    },
    /// Show one dead letter with its event and every attempt.
    Show {
        /// The dead letter's id.
        id: String,
    },
    /// Deliver dead letters again: by id, by filter, or all.
    Redrive {
        /// Ids to redrive.
        ids: Vec<String>,
        #[command(flatten)]
        filter: Filter,
        /// Redrive every dead letter of the broker (when no id or filter is given).
        #[arg(long)]
        all: bool,
        /// Deliver to this URL instead of the trigger's subscriber.
        #[arg(long)]
        uri: Option<String>,
    },
    /// Delete dead letters: by id, by filter, or all.
    Purge {
        /// Ids to purge.
        ids: Vec<String>,
        #[command(flatten)]
        filter: Filter,
        /// Purge every dead letter of the broker (when no id or filter is given).
        #[arg(long)]
        all: bool,
    },
}

/// The columns of `switchyard dlq list`.
const DEAD_LETTER_COLUMNS: &[(&str, &str)] = &[
    ("ID", "id"),
    ("TIME", "time"),
    ("TRIGGER", "trigger"),
    ("TYPE", "type"),
    ("SOURCE", "source"),
    ("EVENT ID", "eventId"),
    ("STATUS", "status"),
    ("ATTEMPTS", "attempts"),
    ("REASON", "reason"),
];

/// A page of dead letters as `output` says: the JSON, or a table and how to get the next page.
fn list_output(output: Output, v: &serde_json::Value) -> String {
    match output {
        Output::Json => pretty(v),
        Output::Table => {
            let items = v["items"].as_array().cloned().unwrap_or_default();
            let mut out = table(DEAD_LETTER_COLUMNS, &items);
            if let Some(next) = v["next"].as_str() {
                out.push_str(&format!("(more: --after {next})\n"));
            }
            out
        }
    }
}

/// Runs `switchyard dlq`: one call to the management API, its answer as `args.output` says.
pub async fn run(args: DlqArgs) -> Result<String> {
    let broker = crate::client::broker_arg(&args.broker)?;
    let base = format!(
        "{}/api/v1/namespaces/{}/brokers/{}/deadletters",
        args.server.trim_end_matches('/'),
        broker.namespace(),
        broker.name()
    );
    let client = args.auth.client()?;
    let sent = |r: reqwest::Result<reqwest::Response>| {
        r.with_context(|| format!("cannot reach the server at {}", args.server))
    };
    match args.command {
        DlqCommand::List {
            filter,
            limit,
            after,
        } => {
            let mut q = filter.query();
            q.push(("limit", limit.to_string()));
            if let Some(a) = after {
                q.push(("after", a));
            }
            let v = answer(sent(client.get(&base).query(&q).send().await)?).await?;
            Ok(list_output(args.output, &v))
        }
        DlqCommand::Show { id } => {
            let v = answer(sent(client.get(format!("{base}/{id}")).send().await)?).await?;
            Ok(pretty(&v))
        }
        DlqCommand::Redrive {
            ids,
            filter,
            all,
            uri,
        } => {
            let mut body = serde_json::json!({ "all": all });
            if ids.is_empty() {
                body["filter"] = filter.json();
            } else {
                body["ids"] = ids.into();
            }
            if let Some(uri) = uri {
                body["uri"] = uri.into();
            }
            let resp = sent(
                client
                    .post(format!("{base}/redrive"))
                    .header("accept", LINES)
                    .json(&body)
                    .send()
                    .await,
            )?;
            let v = followed(resp, "redriving", "redriven").await?;
            Ok(match args.output {
                Output::Json => pretty(&v),
                Output::Table => format!("redriven: {}\n", cell(&v["redriven"])),
            })
        }
        DlqCommand::Purge { ids, filter, all } => {
            let n = if ids.is_empty() {
                let mut q = filter.query();
                if all {
                    q.push(("all", "true".to_owned()));
                }
                let resp = sent(
                    client
                        .delete(&base)
                        .header("accept", LINES)
                        .query(&q)
                        .send()
                        .await,
                )?;
                let v = followed(resp, "purging", "purged").await?;
                v["purged"].as_u64().unwrap_or(0)
            } else {
                let mut progress = Progress::new("purging", Some(ids.len() as u64));
                for (i, id) in ids.iter().enumerate() {
                    answer(sent(client.delete(format!("{base}/{id}")).send().await)?).await?;
                    progress.update(i as u64 + 1);
                }
                progress.finish(ids.len() as u64, "done");
                ids.len() as u64
            };
            Ok(match args.output {
                Output::Json => pretty(&serde_json::json!({ "purged": n })),
                Output::Table => format!("purged: {n}\n"),
            })
        }
    }
}

/// What a bulk redrive or purge is asked to answer with: its progress as JSON lines.
const LINES: &str = "application/x-ndjson";

/// Reads a bulk change's answer: JSON lines (`{"progress": n}`…, then `{"KEY": n}` or
/// `{"problem": {…}}`) shown as a counter labelled `label` on standard error; or a plain JSON
/// answer (a server that does not stream, or a refusal before it started). The last object.
async fn followed(
    mut resp: reqwest::Response,
    label: &str,
    key: &str,
) -> Result<serde_json::Value> {
    let lines = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(LINES));
    if !resp.status().is_success() || !lines {
        // Refused, or done before it had anything to report: the count all the same.
        let v = answer(resp).await?;
        if let Some(n) = v[key].as_u64() {
            Progress::new(label, None).finish(n, "done");
        }
        return Ok(v);
    }
    let mut progress = Progress::new(label, None);
    let mut pending = Vec::new();
    let mut last = serde_json::Value::Null;
    let mut done = 0;
    while let Some(chunk) = resp.chunk().await.context("reading the answer")? {
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let v: serde_json::Value =
                serde_json::from_slice(&line).context("the server's progress is not JSON lines")?;
            if let Some(n) = v["progress"].as_u64() {
                done = n;
                progress.update(n);
            } else {
                last = v;
            }
        }
    }
    if let Some(problem) = last.get("problem") {
        progress.finish(done, "failed");
        bail!(
            "the server stopped: {}",
            problem["detail"].as_str().unwrap_or("no detail")
        );
    }
    let Some(n) = last[key].as_u64() else {
        bail!("the server's answer ended before it said how many were {key}");
    };
    progress.finish(n, "done");
    Ok(last)
}
