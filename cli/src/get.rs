//! `switchyard get …`: list resources of a running server over its management API.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use crate::client::{Output, answer, pretty, table};

#[derive(Debug, Args)]
pub struct GetArgs {
    #[command(flatten)]
    auth: crate::client::TokenArg,
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

#[derive(Debug, Subcommand)]
enum GetCommand {
    /// Event types: configured EventTypes and those discovered at ingress (`record` mode).
    #[command(alias = "eventtype", alias = "et")]
    Eventtypes,
}

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

pub async fn run(args: GetArgs) -> Result<String> {
    let server = args.server.trim_end_matches('/');
    let url = match (&args.command, &args.broker) {
        (GetCommand::Eventtypes, Some(broker)) => {
            let broker = crate::client::broker_arg(broker)?;
            format!(
                "{server}/api/v1/namespaces/{}/brokers/{}/eventtypes",
                broker.namespace(),
                broker.name()
            )
        }
        (GetCommand::Eventtypes, None) => {
            format!("{server}/api/v1/namespaces/{}/eventtypes", args.namespace)
        }
    };
    let resp = args
        .auth
        .client()?
        .get(&url)
        .send()
        .await
        .with_context(|| format!("cannot reach the server at {}", args.server))?;
    let v = answer(resp).await?;
    Ok(match args.output {
        Output::Json => pretty(&v),
        Output::Table => table(
            EVENT_TYPE_COLUMNS,
            &v["items"].as_array().cloned().unwrap_or_default(),
        ),
    })
}
