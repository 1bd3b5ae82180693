//! `switchyard replay`: re-deliver a broker's stored events to one trigger, as a job
//! (spec/management-api.md, "Replay"): a preview count first, then the job followed with a
//! progress counter until it ends (or `--detach`); `replay list`, `show`, `cancel`.

use std::time::Duration;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::client::{pretty, table};
use crate::get::ServerArgs;
use crate::progress::Progress;

#[derive(Debug, Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    server: ServerArgs,
    #[command(subcommand)]
    command: ReplayCommand,
}

#[derive(Debug, Subcommand)]
enum ReplayCommand {
    /// Replay a range of a trigger's broker to that trigger alone: previews the count, then
    /// runs the job and follows it.
    Start(StartArgs),
    /// The namespace's replay jobs.
    List,
    /// One job, as JSON.
    Show {
        /// The job's id.
        id: String,
    },
    /// Stop a running job (what it handed to the trigger is still delivered).
    Cancel {
        /// The job's id.
        id: String,
    },
}

#[derive(Debug, Args)]
struct StartArgs {
    /// The trigger to deliver to.
    trigger: String,
    /// The first offset to replay.
    #[arg(long)]
    from: Option<u64>,
    /// Replay up to this offset, not included.
    #[arg(long)]
    to: Option<u64>,
    /// Replay events stored at or after this time (RFC 3339).
    #[arg(long)]
    from_time: Option<String>,
    /// Replay events stored before this time (RFC 3339).
    #[arg(long)]
    to_time: Option<String>,
    /// Only events this CESQL expression matches (the trigger's own filter applies too).
    #[arg(long)]
    filter: Option<String>,
    /// Events handed to the trigger per second at most (the server's default: 100).
    #[arg(long)]
    rate: Option<f64>,
    /// Print the count and replay nothing.
    #[arg(long)]
    dry_run: bool,
    /// Start the job and print its id without following it.
    #[arg(long)]
    detach: bool,
}

const JOB_COLUMNS: &[(&str, &str)] = &[
    ("ID", "id"),
    ("TRIGGER", "trigger"),
    ("STATE", "state"),
    ("MATCHED", "matched"),
    ("SENT", "sent"),
    ("CREATED", "createdAt"),
    ("BY", "by"),
];

pub async fn run(args: ReplayArgs) -> Result<String> {
    let s = &args.server;
    match &args.command {
        ReplayCommand::List => {
            let v = s.get(&s.url("replays")).await?;
            Ok(table(
                JOB_COLUMNS,
                &v["items"].as_array().cloned().unwrap_or_default(),
            ))
        }
        ReplayCommand::Show { id } => Ok(pretty(&s.get(&s.url(&format!("replays/{id}"))).await?)),
        ReplayCommand::Cancel { id } => {
            let v = s.delete(&s.url(&format!("replays/{id}"))).await?;
            Ok(format!(
                "replay {id}: {}\n",
                v["state"].as_str().unwrap_or("?")
            ))
        }
        ReplayCommand::Start(a) => start(s, a).await,
    }
}

async fn start(s: &ServerArgs, a: &StartArgs) -> Result<String> {
    let mut body = json!({
        "fromOffset": a.from, "toOffset": a.to, "fromTime": a.from_time, "toTime": a.to_time,
        "filter": a.filter, "ratePerSecond": a.rate,
    });
    if let Some(fields) = body.as_object_mut() {
        fields.retain(|_, v| !v.is_null());
    }
    if a.from.is_none() && a.from_time.is_none() {
        bail!(
            "say where the replay starts: --from OFFSET or --from-time TIME (--from 0 replays everything stored)"
        );
    }
    let url = s.url(&format!("triggers/{}/replays", a.trigger));
    let mut preview = body.clone();
    preview["dryRun"] = true.into();
    let p = s.post_json(&url, &preview).await?;
    let matched = p["matched"].as_u64().unwrap_or(0);
    let line = format!(
        "{matched} events to replay to trigger {}/{} (offsets {} to {}, {} read)\n",
        s.namespace(),
        a.trigger,
        p["fromOffset"],
        p["toOffset"],
        p["scanned"]
    );
    if a.dry_run || matched == 0 {
        return Ok(line);
    }
    crate::print_err(&line);
    let job = s.post_json(&url, &body).await?;
    let id = job["id"].as_str().unwrap_or_default().to_owned();
    if a.detach {
        return Ok(format!("replay {id} started\n"));
    }
    let mut progress = Progress::new(&format!("replay {id}"), Some(matched));
    loop {
        let j: Value = s.get(&s.url(&format!("replays/{id}"))).await?;
        let sent = j["sent"].as_u64().unwrap_or(0);
        match j["state"].as_str().unwrap_or("") {
            "running" | "cancelling" => progress.update(sent),
            state => {
                progress.finish(sent, state);
                return match state {
                    "done" => Ok(format!(
                        "replay {id} done: {sent} events handed to the trigger\n"
                    )),
                    other => bail!(
                        "replay {id} {other} after {sent} events{}",
                        j["error"]
                            .as_str()
                            .map(|e| format!(": {e}"))
                            .unwrap_or_default()
                    ),
                };
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
