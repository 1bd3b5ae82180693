//! `switchyard send`: post one CloudEvent to a broker (or any URL) from the command line, in
//! binary or structured mode, and say what the server answered.

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::{Args, ValueEnum};
use switchyard_core::{CloudEvent, Data, ExtValue};

/// How the event travels (the CloudEvents HTTP binding's content modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Attributes in `ce-` headers, data as the body.
    Binary,
    /// The whole event as `application/cloudevents+json`.
    Structured,
    /// A batch of one, `application/cloudevents-batch+json`.
    Batch,
}

#[derive(Debug, Args)]
pub struct SendArgs {
    #[command(flatten)]
    auth: crate::client::TokenArg,
    /// The server's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    server: String,
    /// The broker, as `namespace/name` (or `name` in `default`).
    #[arg(long, default_value = "default/default", conflicts_with = "to")]
    broker: String,
    /// Send to this URL instead of a broker of `--server` (a sink, a source endpoint).
    #[arg(long)]
    to: Option<String>,
    /// `type` of the event.
    #[arg(long = "type")]
    ty: String,
    /// `source` of the event.
    #[arg(long, default_value = "/switchyard/cli")]
    source: String,
    /// `id` of the event (default: a new unique one).
    #[arg(long)]
    id: Option<String>,
    /// `subject` of the event.
    #[arg(long)]
    subject: Option<String>,
    /// `time` of the event, RFC 3339 (default: now).
    #[arg(long)]
    time: Option<String>,
    /// The data, as text.
    #[arg(long, conflicts_with = "data_file")]
    data: Option<String>,
    /// A file holding the data (`-` reads standard input).
    #[arg(long)]
    data_file: Option<std::path::PathBuf>,
    /// `datacontenttype` (default `application/json` when data is given).
    #[arg(long)]
    content_type: Option<String>,
    /// An extension attribute, `name=value` (repeatable).
    #[arg(long = "ext", value_name = "NAME=VALUE")]
    extensions: Vec<String>,
    /// `binary` (default), `structured` or `batch`.
    #[arg(long, value_enum, default_value_t = Mode::Binary)]
    mode: Mode,
}

fn new_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("cli-{nanos:x}-{:x}", std::process::id())
}

/// Builds the event the arguments describe.
fn event(args: &SendArgs) -> Result<CloudEvent> {
    let id = args.id.clone().unwrap_or_else(new_id);
    let mut e = CloudEvent::new(id, args.source.clone(), args.ty.clone())?;
    e.subject.clone_from(&args.subject);
    e.time = Some(args.time.clone().unwrap_or_else(|| {
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    }));
    let data = match (&args.data, &args.data_file) {
        (Some(d), _) => Some(d.clone().into_bytes()),
        (None, Some(p)) if p.as_os_str() == "-" => {
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)?;
            Some(buf)
        }
        (None, Some(p)) => {
            Some(std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?)
        }
        (None, None) => None,
    };
    if let Some(d) = data {
        e.datacontenttype = Some(
            args.content_type
                .clone()
                .unwrap_or_else(|| "application/json".into()),
        );
        e.data = Data::Binary(Bytes::from(d));
    } else {
        e.datacontenttype.clone_from(&args.content_type);
    }
    for ext in &args.extensions {
        let Some((name, value)) = ext.split_once('=') else {
            bail!("--ext `{ext}`: write it as name=value");
        };
        e.set_extension(name, ExtValue::String(value.to_owned()))
            .with_context(|| format!("--ext `{ext}`"))?;
    }
    e.validate()?;
    Ok(e)
}

/// Sends the event; the line to print on success.
pub async fn run(args: SendArgs) -> Result<String> {
    let event = event(&args)?;
    let url = match &args.to {
        Some(u) => u.clone(),
        None => {
            let broker = if args.broker.contains('/') {
                args.broker.clone()
            } else {
                format!("default/{}", args.broker)
            };
            format!("{}/{broker}", args.server.trim_end_matches('/'))
        }
    };
    let (headers, body) = match args.mode {
        Mode::Binary => switchyard_core::http::encode_binary(&event),
        Mode::Structured => switchyard_core::http::encode_structured(&event),
        Mode::Batch => switchyard_core::http::encode_batch(std::slice::from_ref(&event)),
    };
    let resp = args
        .auth
        .client()?
        .post(&url)
        .headers(headers)
        .body(body)
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = resp.status();
    if status.is_success() {
        Ok(format!("sent {} to {url}: {status}\n", event.id))
    } else {
        // A problem body becomes the one-line error.
        crate::client::answer(resp).await?;
        bail!("{url} answered {status}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(Debug, clap::Parser)]
    struct T {
        #[command(flatten)]
        args: SendArgs,
    }

    fn parse(argv: &[&str]) -> SendArgs {
        let mut all = vec!["t"];
        all.extend_from_slice(argv);
        T::try_parse_from(all).map(|t| t.args).expect("parses")
    }

    #[test]
    fn builds_the_event_from_the_arguments() {
        let e = event(&parse(&[
            "--type",
            "com.example.x",
            "--id",
            "1",
            "--data",
            "{\"a\":1}",
            "--ext",
            "team=core",
        ]))
        .expect("valid");
        assert_eq!((e.id.as_str(), e.ty.as_str()), ("1", "com.example.x"));
        assert_eq!(e.datacontenttype.as_deref(), Some("application/json"));
        assert_eq!(
            e.extensions.get("team"),
            Some(&ExtValue::String("core".into()))
        );
        assert!(event(&parse(&["--type", "x", "--ext", "novalue"])).is_err());
        assert!(event(&parse(&["--type", "x", "--ext", "Bad=1"])).is_err());
    }
}
