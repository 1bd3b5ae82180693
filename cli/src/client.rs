//! What the commands that talk to a running server share: reading its JSON answers (problem
//! bodies become one-line errors), the output choice, and plain-text tables.

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use switchyard_core::id::BrokerId;

/// The broker a `--broker namespace/name` option names.
pub fn broker_arg(text: &str) -> Result<BrokerId> {
    BrokerId::parse(text)
        .map_err(|_| anyhow::anyhow!("--broker must be namespace/name, not `{text}`"))
}

/// The credentials a command sends (spec/security.md).
#[derive(Debug, Clone, Default, Args)]
pub struct TokenArg {
    /// A bearer token for the server (an Identity's token or a JWT); default the
    /// `SWITCHYARD_TOKEN` environment variable, which keeps it out of the process list.
    #[arg(long, global = true)]
    token: Option<String>,
}

impl TokenArg {
    /// An HTTP client that sends the token, if there is one, with every request.
    pub fn client(&self) -> Result<reqwest::Client> {
        let token = self
            .token
            .clone()
            .or_else(|| std::env::var("SWITCHYARD_TOKEN").ok())
            .filter(|t| !t.is_empty());
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = token {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .context("the token holds characters a header cannot")?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .context("cannot build an HTTP client")
    }
}

/// How a command prints what the server answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    Table,
    /// The server's JSON, pretty-printed, for programs.
    Json,
}

/// The JSON body of an answer; `Null` for an empty 2xx. A non-2xx answer is an error carrying
/// the problem's `detail`.
pub async fn answer(resp: reqwest::Response) -> Result<serde_json::Value> {
    let status = resp.status();
    let body = resp.bytes().await.context("reading the answer")?;
    if body.is_empty() {
        if status.is_success() {
            return Ok(serde_json::Value::Null);
        }
        bail!("the server answered {status}");
    }
    let v: serde_json::Value = serde_json::from_slice(&body)
        .with_context(|| format!("the server answered {status} with a body that is not JSON"))?;
    if !status.is_success() {
        let detail = v["detail"].as_str().unwrap_or("no detail");
        bail!("the server answered {status}: {detail}");
    }
    Ok(v)
}

/// Pretty JSON with a final newline.
pub fn pretty(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default() + "\n"
}

/// A table cell: strings as they are, `-` for null, other values as JSON.
pub fn cell(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "-".to_owned(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A left-aligned table of `items` with the given (heading, JSON field) columns.
pub fn table(columns: &[(&str, &str)], items: &[serde_json::Value]) -> String {
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
                .max(h.chars().count())
        })
        .collect();
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let text: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(text.join("  ").trim_end());
        out.push('\n');
    };
    line(columns.iter().map(|(h, _)| *h).collect());
    for r in &rows {
        line(r.iter().map(String::as_str).collect());
    }
    out
}
