//! `switchyard get …` and `switchyard describe …`: a running server's resources with their
//! status, as `kubectl get` and `kubectl describe` show them (spec/management-api.md,
//! "Resources"); `switchyard pause` and `resume`.

use anyhow::{Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};

use crate::client::{answer, pretty, table};

/// Where the server is and how to reach it, for every command here.
#[derive(Debug, Args)]
pub struct ServerArgs {
    #[command(flatten)]
    auth: crate::client::TokenArg,
    /// The server's base URL.
    #[arg(long, global = true, default_value = "http://127.0.0.1:8080")]
    server: String,
    /// The namespace.
    #[arg(long, short, global = true, default_value = "default")]
    namespace: String,
}

impl ServerArgs {
    /// The namespace it names.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The URL of `path` under the namespace's API.
    pub fn url(&self, path: &str) -> String {
        format!(
            "{}/api/v1/namespaces/{}/{path}",
            self.server.trim_end_matches('/'),
            self.namespace
        )
    }

    /// GETs `url`: its JSON, or the problem's one-line error.
    pub async fn get(&self, url: &str) -> Result<Value> {
        let resp = self
            .auth
            .client()?
            .get(url)
            .send()
            .await
            .with_context(|| format!("cannot reach the server at {}", self.server))?;
        answer(resp).await
    }

    async fn post(&self, url: &str) -> Result<Value> {
        self.post_json(url, &json!({})).await
    }

    /// POSTs `body` as JSON to `url`.
    pub async fn post_json(&self, url: &str, body: &Value) -> Result<Value> {
        let resp = self
            .auth
            .client()?
            .post(url)
            .json(body)
            .send()
            .await
            .with_context(|| format!("cannot reach the server at {}", self.server))?;
        answer(resp).await
    }

    /// DELETEs `url`.
    pub async fn delete(&self, url: &str) -> Result<Value> {
        let resp = self
            .auth
            .client()?
            .delete(url)
            .send()
            .await
            .with_context(|| format!("cannot reach the server at {}", self.server))?;
        answer(resp).await
    }
}

#[derive(Debug, Args)]
pub struct GetArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Only this broker's event types, as `namespace/name` (`get eventtypes`).
    #[arg(long, global = true)]
    broker: Option<String>,
    /// `table` (the default), `wide` (more columns), `json` or `yaml` (the resources whole).
    #[arg(long, short, global = true, value_enum, default_value_t = Format::Table)]
    output: Format,
    #[command(subcommand)]
    command: GetCommand,
}

/// How `get` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns.
    Table,
    /// Aligned columns, more of them.
    Wide,
    /// The server's JSON.
    Json,
    /// The same as YAML.
    Yaml,
}

#[derive(Debug, Subcommand)]
enum GetCommand {
    /// Triggers with their status: ready or why not, lag, recent deliveries, dead letters.
    #[command(alias = "trigger")]
    Triggers {
        /// Only this one.
        name: Option<String>,
    },
    /// Brokers with their stored events.
    #[command(alias = "broker")]
    Brokers {
        /// Only this one.
        name: Option<String>,
    },
    /// Sources (every kind) and whether they run.
    #[command(alias = "source")]
    Sources {
        /// Only this one.
        name: Option<String>,
    },
    /// Event types: configured EventTypes and those discovered at ingress (`record` mode).
    #[command(alias = "eventtype", alias = "et")]
    Eventtypes {
        /// Only this configured EventType.
        name: Option<String>,
    },
}

/// A duration in ms as `kubectl` writes ages: `45s`, `3m`, `2h`, `4d`.
pub fn age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..120 => format!("{s}s"),
        120..7200 => format!("{}m", s / 60),
        7200..172_800 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// The condition `kind` of a resource: (status, reason, message).
fn condition(item: &Value, kind: &str) -> (String, String, String) {
    let c = item["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == kind))
        .cloned()
        .unwrap_or_default();
    let text = |k: &str| c[k].as_str().unwrap_or("").to_owned();
    (text("status"), text("reason"), text("message"))
}

/// A trigger as one row of `get triggers`.
fn trigger_row(t: &Value) -> Value {
    let s = &t["status"];
    let (ready, reason, _) = condition(t, "Ready");
    let d = &s["deliveries"];
    json!({
        "name": t["metadata"]["name"],
        "broker": t["spec"]["broker"],
        "ready": ready,
        "reason": reason,
        "lag": s["lag"],
        "oldest": s["oldestUndeliveredAgeMs"].as_u64().map(age),
        "rate": d["deliveredPerSecond"].as_f64().map(|r| format!("{r}/s")),
        "success": d["successRatio"].as_f64().map(|r| format!("{:.1}%", r * 100.0)),
        "deadLetters": s["deadLetters"],
        "subscriber": s["subscriberUri"],
        "lastError": d["lastError"]["error"],
    })
}

const TRIGGER_COLUMNS: &[(&str, &str)] = &[
    ("NAME", "name"),
    ("BROKER", "broker"),
    ("READY", "ready"),
    ("REASON", "reason"),
    ("LAG", "lag"),
    ("OLDEST", "oldest"),
    ("RATE", "rate"),
    ("SUCCESS", "success"),
    ("DEAD LETTERS", "deadLetters"),
];
const TRIGGER_WIDE: &[(&str, &str)] = &[("SUBSCRIBER", "subscriber"), ("LAST ERROR", "lastError")];

fn broker_row(b: &Value) -> Value {
    let s = &b["status"];
    let (ready, reason, _) = condition(b, "Ready");
    json!({
        "name": b["metadata"]["name"],
        "ready": ready,
        "reason": reason,
        "events": s["stored"]["events"],
        "bytes": s["stored"]["bytes"],
        "triggers": s["triggers"],
        "deadLetters": s["deadLetters"],
        "url": s["address"]["url"],
    })
}

const BROKER_COLUMNS: &[(&str, &str)] = &[
    ("NAME", "name"),
    ("READY", "ready"),
    ("REASON", "reason"),
    ("EVENTS", "events"),
    ("BYTES", "bytes"),
    ("TRIGGERS", "triggers"),
    ("DEAD LETTERS", "deadLetters"),
];
const BROKER_WIDE: &[(&str, &str)] = &[("URL", "url")];

fn source_row(r: &Value) -> Value {
    let (ready, reason, message) = condition(r, "Ready");
    let e = &r["status"]["events"];
    json!({
        "name": r["metadata"]["name"],
        "kind": r["kind"],
        "ready": ready,
        "reason": reason,
        "message": message,
        "stored": e["stored"],
        "lastStored": e["lastStored"],
        "lastError": e["lastError"]["error"],
    })
}

const SOURCE_COLUMNS: &[(&str, &str)] = &[
    ("NAME", "name"),
    ("KIND", "kind"),
    ("READY", "ready"),
    ("REASON", "reason"),
    ("STORED (5 MIN)", "stored"),
    ("LAST STORED", "lastStored"),
];
const SOURCE_WIDE: &[(&str, &str)] = &[("MESSAGE", "message"), ("LAST ERROR", "lastError")];

/// The columns of `switchyard get eventtypes`.
const EVENT_TYPE_COLUMNS: &[(&str, &str)] = &[
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

/// `value` printed as `format` asks, a table made of `row` with `columns` (and `wide`).
fn render(
    format: Format,
    value: &Value,
    row: fn(&Value) -> Value,
    columns: &[(&str, &str)],
    wide: &[(&str, &str)],
) -> String {
    match format {
        Format::Json => pretty(value),
        Format::Yaml => serde_norway::to_string(value).unwrap_or_default(),
        Format::Table | Format::Wide => {
            let items = match value.get("items") {
                Some(Value::Array(items)) => items.clone(),
                _ => vec![value.clone()],
            };
            let rows: Vec<Value> = items.iter().map(row).collect();
            let mut all = columns.to_vec();
            if format == Format::Wide {
                all.extend_from_slice(wide);
            }
            table(&all, &rows)
        }
    }
}

pub async fn run(args: GetArgs) -> Result<String> {
    let one = |kind: &str, name: &Option<String>| match name {
        Some(n) => args.server.url(&format!("{kind}/{n}")),
        None => args.server.url(kind),
    };
    let format = args.output;
    Ok(match &args.command {
        GetCommand::Triggers { name } => {
            let v = args.server.get(&one("triggers", name)).await?;
            render(format, &v, trigger_row, TRIGGER_COLUMNS, TRIGGER_WIDE)
        }
        GetCommand::Brokers { name } => {
            let v = args.server.get(&one("brokers", name)).await?;
            render(format, &v, broker_row, BROKER_COLUMNS, BROKER_WIDE)
        }
        GetCommand::Sources { name } => {
            let v = args.server.get(&one("sources", name)).await?;
            render(format, &v, source_row, SOURCE_COLUMNS, SOURCE_WIDE)
        }
        GetCommand::Eventtypes { name } => {
            let url = match (&args.broker, name) {
                (_, Some(name)) => args.server.url(&format!("eventtypes/{name}")),
                (Some(broker), None) => {
                    let broker = crate::client::broker_arg(broker)?;
                    format!(
                        "{}/api/v1/namespaces/{}/brokers/{}/eventtypes",
                        args.server.server.trim_end_matches('/'),
                        broker.namespace(),
                        broker.name()
                    )
                }
                (None, None) => args.server.url("eventtypes"),
            };
            let v = args.server.get(&url).await?;
            render(format, &v, Value::clone, EVENT_TYPE_COLUMNS, &[])
        }
    })
}

// ---- describe -------------------------------------------------------------------------

#[derive(Debug, Args)]
pub struct DescribeArgs {
    #[command(flatten)]
    server: ServerArgs,
    #[command(subcommand)]
    command: DescribeCommand,
}

#[derive(Debug, Subcommand)]
enum DescribeCommand {
    /// A trigger: its configuration, status, and its recent dead letters with every attempt.
    Trigger {
        /// Its name.
        name: String,
    },
    /// A broker: its configuration, status and stored events.
    Broker {
        /// Its name.
        name: String,
    },
    /// A source: its configuration and whether it runs.
    Source {
        /// Its name.
        name: String,
    },
}

/// How many of a trigger's dead letters `describe trigger` shows, newest first, and how
/// many of them with every attempt.
const RECENT_DEAD_LETTERS: usize = 5;
const WITH_ATTEMPTS: usize = 2;

fn field(out: &mut String, indent: usize, key: &str, value: impl std::fmt::Display) {
    let pad = " ".repeat(indent);
    let key = format!("{key}:");
    out.push_str(&format!("{pad}{key:<22}{value}\n"));
}

fn text(v: &Value) -> String {
    crate::client::cell(v)
}

/// The configuration part: the resource's `spec`, as YAML, indented.
fn spec(out: &mut String, item: &Value) {
    out.push_str("Spec:\n");
    let yaml = serde_norway::to_string(&item["spec"]).unwrap_or_default();
    for line in yaml.lines() {
        out.push_str(&format!("  {line}\n"));
    }
}

fn conditions(out: &mut String, item: &Value) {
    out.push_str("Conditions:\n");
    let rows: Vec<Value> = item["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let t = table(
        &[
            ("TYPE", "type"),
            ("STATUS", "status"),
            ("REASON", "reason"),
            ("MESSAGE", "message"),
        ],
        &rows,
    );
    for line in t.lines() {
        out.push_str(&format!("  {line}\n"));
    }
}

fn header(out: &mut String, item: &Value) {
    field(out, 0, "Name", text(&item["metadata"]["name"]));
    field(out, 0, "Namespace", text(&item["metadata"]["namespace"]));
    field(out, 0, "Kind", text(&item["kind"]));
}

pub async fn describe(args: DescribeArgs) -> Result<String> {
    let s = &args.server;
    let mut out = String::new();
    match &args.command {
        DescribeCommand::Trigger { name } => {
            let t = s.get(&s.url(&format!("triggers/{name}"))).await?;
            header(&mut out, &t);
            spec(&mut out, &t);
            conditions(&mut out, &t);
            let st = &t["status"];
            out.push_str("Status:\n");
            field(&mut out, 2, "Subscriber", text(&st["subscriberUri"]));
            if let Some(dls) = st["deadLetterSinkUri"].as_str() {
                field(&mut out, 2, "Dead-letter sink", dls);
            }
            let paused = match st["pausedSince"].as_str() {
                Some(since) => format!("yes, since {since} by {}", text(&st["pausedBy"])),
                None => "no".to_owned(),
            };
            field(&mut out, 2, "Paused", paused);
            let oldest = st["oldestUndeliveredAgeMs"]
                .as_u64()
                .map_or_else(String::new, |ms| {
                    format!(" (the oldest arrived {} ago)", age(ms))
                });
            field(&mut out, 2, "Lag", format!("{}{oldest}", text(&st["lag"])));
            let d = &st["deliveries"];
            field(
                &mut out,
                2,
                &format!(
                    "Last {} min",
                    d["windowSeconds"].as_u64().unwrap_or(300) / 60
                ),
                format!(
                    "{} attempts, {} delivered, {} failed ({}/s)",
                    text(&d["attempts"]),
                    text(&d["delivered"]),
                    text(&d["failed"]),
                    text(&d["deliveredPerSecond"])
                ),
            );
            if let Some(last) = d["lastDelivered"].as_str() {
                field(&mut out, 2, "Last delivered", last);
            }
            if d["lastError"].is_object() {
                field(
                    &mut out,
                    2,
                    "Last error",
                    format!(
                        "{} {}",
                        text(&d["lastError"]["time"]),
                        text(&d["lastError"]["error"])
                    ),
                );
            }
            field(&mut out, 2, "Dead letters", text(&st["deadLetters"]));
            recent_dead_letters(s, &t, name, &mut out).await?;
        }
        DescribeCommand::Broker { name } => {
            let b = s.get(&s.url(&format!("brokers/{name}"))).await?;
            header(&mut out, &b);
            spec(&mut out, &b);
            conditions(&mut out, &b);
            let st = &b["status"];
            out.push_str("Status:\n");
            field(&mut out, 2, "Address", text(&st["address"]["url"]));
            field(&mut out, 2, "Events stored", text(&st["stored"]["events"]));
            field(&mut out, 2, "Bytes stored", text(&st["stored"]["bytes"]));
            field(
                &mut out,
                2,
                "Offsets",
                format!(
                    "{} to {}",
                    text(&st["stored"]["firstOffset"]),
                    text(&st["stored"]["nextOffset"])
                ),
            );
            field(&mut out, 2, "Triggers", text(&st["triggers"]));
            field(&mut out, 2, "Dead letters", text(&st["deadLetters"]));
        }
        DescribeCommand::Source { name } => {
            let r = s.get(&s.url(&format!("sources/{name}"))).await?;
            header(&mut out, &r);
            spec(&mut out, &r);
            conditions(&mut out, &r);
            let e = &r["status"]["events"];
            out.push_str("Status:\n");
            field(
                &mut out,
                2,
                &format!(
                    "Last {} min",
                    e["windowSeconds"].as_u64().unwrap_or(300) / 60
                ),
                format!(
                    "{} events stored, {} failed",
                    text(&e["stored"]),
                    text(&e["failed"])
                ),
            );
            field(&mut out, 2, "Last stored", text(&e["lastStored"]));
            if e["lastError"].is_object() {
                field(
                    &mut out,
                    2,
                    "Last error",
                    format!(
                        "{} {}",
                        text(&e["lastError"]["time"]),
                        text(&e["lastError"]["error"])
                    ),
                );
            }
        }
    }
    Ok(out)
}

/// The trigger's newest dead letters, the newest ones with every attempt.
async fn recent_dead_letters(
    s: &ServerArgs,
    t: &Value,
    name: &str,
    out: &mut String,
) -> Result<()> {
    let broker = t["spec"]["broker"].as_str().unwrap_or("default");
    let base = s.url(&format!("brokers/{broker}/deadletters"));
    // Oldest first, a page at a time: the last page holds the newest.
    let mut url = format!("{base}?trigger={name}&limit=1000");
    let mut items: Vec<Value> = Vec::new();
    loop {
        let page = s.get(&url).await?;
        items.extend(page["items"].as_array().cloned().unwrap_or_default());
        let keep = items.len().saturating_sub(RECENT_DEAD_LETTERS);
        items.drain(..keep);
        match page["next"].as_str() {
            Some(after) => url = format!("{base}?trigger={name}&limit=1000&after={after}"),
            None => break,
        }
    }
    if items.is_empty() {
        return Ok(());
    }
    items.reverse();
    out.push_str("Recent dead letters (newest first):\n");
    let t = table(
        &[
            ("ID", "id"),
            ("TIME", "time"),
            ("TYPE", "type"),
            ("STATUS", "status"),
            ("REASON", "reason"),
            ("ATTEMPTS", "attempts"),
        ],
        &items,
    );
    for line in t.lines() {
        out.push_str(&format!("  {line}\n"));
    }
    for item in items.iter().take(WITH_ATTEMPTS) {
        let id = text(&item["id"]);
        // Reading a dead letter's event needs `deadletters:read-data`: without it, the
        // summary above is what there is.
        let Ok(letter) = s.get(&format!("{base}/{id}")).await else {
            continue;
        };
        out.push_str(&format!(
            "Attempts of {id} (event {}):\n",
            text(&letter["event"]["id"])
        ));
        for (i, a) in letter["attempts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let answer = match (a["status"].as_u64(), a["error"].as_str()) {
                (Some(status), _) => status.to_string(),
                (None, Some(error)) => error.to_owned(),
                (None, None) => "-".to_owned(),
            };
            let body = a["body"]
                .as_str()
                .map(|b| {
                    format!(
                        "  {}",
                        b.chars().take(80).collect::<String>().replace('\n', " ")
                    )
                })
                .unwrap_or_default();
            out.push_str(&format!(
                "  #{:<3} {}  {answer}  {}ms{body}\n",
                i + 1,
                text(&a["time"]),
                text(&a["latencyMs"]),
            ));
        }
    }
    Ok(())
}

// ---- pause and resume -------------------------------------------------------------------

#[derive(Debug, Args)]
pub struct PauseArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// The trigger.
    trigger: String,
}

/// `pause` (`resume: false`) or `resume`: one line saying what the trigger is now.
pub async fn pause(args: PauseArgs, resume: bool) -> Result<String> {
    let s = &args.server;
    let action = if resume { "resume" } else { "pause" };
    let t = s
        .post(&s.url(&format!("triggers/{}/{action}", args.trigger)))
        .await?;
    let state = if t["status"]["paused"] == true {
        "paused: routed events wait, nothing is attempted until it is resumed"
    } else {
        "running"
    };
    Ok(format!(
        "trigger {}/{} {state}\n",
        s.namespace, args.trigger
    ))
}
