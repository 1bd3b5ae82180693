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

/// The credentials a command sends, and the CAs it trusts (spec/security.md).
#[derive(Debug, Clone, Default, Args)]
pub struct TokenArg {
    /// A bearer token for the server (an Identity's token or a JWT); default the
    /// `SWITCHYARD_TOKEN` environment variable, which keeps it out of the process list.
    #[arg(long, global = true)]
    token: Option<String>,
    /// CA certificates (PEM) to trust besides the system's, for a server whose certificate
    /// a private CA signed.
    #[arg(long, global = true)]
    ca_file: Option<std::path::PathBuf>,
    /// A client certificate (PEM) for a server that requires one; with --client-key-file.
    #[arg(long, global = true, requires = "client_key_file")]
    client_cert_file: Option<std::path::PathBuf>,
    /// The private key (PEM) of --client-cert-file.
    #[arg(long, global = true, requires = "client_cert_file")]
    client_key_file: Option<std::path::PathBuf>,
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
        let read = |path: &std::path::Path| {
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
        };
        let mut builder = reqwest::Client::builder().default_headers(headers);
        if let Some(file) = &self.ca_file {
            let certs = reqwest::Certificate::from_pem_bundle(&read(file)?)
                .with_context(|| format!("{} holds no PEM certificates", file.display()))?;
            builder = builder.tls_certs_merge(certs);
        }
        if let (Some(cert), Some(key)) = (&self.client_cert_file, &self.client_key_file) {
            let mut pem = read(cert)?;
            pem.push(b'\n');
            pem.extend(read(key)?);
            let identity = reqwest::Identity::from_pem(&pem)
                .context("the client certificate and key are not PEM")?;
            builder = builder.identity(identity);
        }
        builder.build().context("cannot build an HTTP client")
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
