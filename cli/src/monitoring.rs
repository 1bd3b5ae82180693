//! `switchyard monitoring`: the Prometheus alert rules and the Grafana dashboard for a
//! Switchyard server, built from the metric names the server exports
//! ([`switchyard_broker::metrics`]) so that they cannot drift from them. `deploy/monitoring/`
//! holds their output; `tests/monitoring.rs` checks that it is current, runs `promtool` over
//! it and finds every metric it names in a live scrape.

use serde::Serialize;
use serde_json::{Value, json};
use switchyard_broker::metrics as m;

/// The labels that name a trigger.
const TRIGGER: &str = "namespace_name, broker_name, trigger_name";
/// The labels that name a broker.
const BROKER: &str = "namespace_name, broker_name";

/// A Prometheus rule file.
#[derive(Debug, Serialize)]
struct RuleFile {
    groups: Vec<Group>,
}

#[derive(Debug, Serialize)]
struct Group {
    name: &'static str,
    rules: Vec<Alert>,
}

#[derive(Debug, Serialize)]
struct Alert {
    alert: &'static str,
    expr: String,
    #[serde(rename = "for", skip_serializing_if = "Option::is_none")]
    for_: Option<&'static str>,
    labels: Labels,
    annotations: Annotations,
}

#[derive(Debug, Serialize)]
struct Labels {
    severity: &'static str,
}

#[derive(Debug, Serialize)]
struct Annotations {
    summary: &'static str,
    description: &'static str,
}

fn alert(
    name: &'static str,
    expr: String,
    for_: Option<&'static str>,
    severity: &'static str,
    (summary, description): (&'static str, &'static str),
) -> Alert {
    Alert {
        alert: name,
        expr,
        for_,
        labels: Labels { severity },
        annotations: Annotations {
            summary,
            description,
        },
    }
}

/// The alert rules, as a Prometheus rule file (YAML).
pub fn alert_rules() -> String {
    let rules = vec![
        alert(
            "SwitchyardTriggerLagging",
            format!(
                "max by ({TRIGGER}) ({}) > 300",
                m::TRIGGER_OLDEST_UNDELIVERED_AGE
            ),
            Some("5m"),
            "warning",
            (
                "Trigger {{ $labels.namespace_name }}/{{ $labels.trigger_name }} is falling behind",
                "The oldest event it has not delivered arrived {{ $value | humanizeDuration }} ago. \
                 Its subscriber is slow, failing or scaled down, or the trigger is paused: \
                 `switchyard describe trigger {{ $labels.trigger_name }} -n {{ $labels.namespace_name }}`.",
            ),
        ),
        alert(
            "SwitchyardSubscriberFailing",
            format!(
                "sum by ({TRIGGER}) (rate({d}{{outcome=~\"retryable|not_retryable\"}}[10m])) \
                 / sum by ({TRIGGER}) (rate({d}{{outcome!=\"held\"}}[10m])) > 0.5 \
                 and sum by ({TRIGGER}) (increase({d}{{outcome=~\"retryable|not_retryable\"}}[10m])) >= 5",
                d = m::DELIVERY_COUNT
            ),
            Some("10m"),
            "critical",
            (
                "The subscriber of trigger {{ $labels.namespace_name }}/{{ $labels.trigger_name }} is failing",
                "{{ $value | humanizePercentage }} of its delivery attempts failed over 10 minutes; \
                 events are being retried and will be dead-lettered when their retries run out \
                 (a subscriber scaled to zero is held, not failing: see SwitchyardTriggerLagging). \
                 The last error is in `switchyard describe trigger {{ $labels.trigger_name }} -n {{ $labels.namespace_name }}`.",
            ),
        ),
        alert(
            "SwitchyardDeadLettersRising",
            format!(
                "sum by ({TRIGGER}, reason) (increase({}[10m])) > 0",
                m::DEAD_LETTERS
            ),
            None,
            "warning",
            (
                "Trigger {{ $labels.namespace_name }}/{{ $labels.trigger_name }} is dead-lettering events",
                "{{ $value }} events were dead-lettered ({{ $labels.reason }}) in 10 minutes. \
                 Inspect and redrive them: `switchyard dlq list --broker {{ $labels.namespace_name }}/{{ $labels.broker_name }} --trigger {{ $labels.trigger_name }}`.",
            ),
        ),
        alert(
            "SwitchyardStoreNearlyFull",
            format!(
                "{} / {} < 0.1",
                m::STORE_DISK_FREE_BYTES,
                m::STORE_DISK_SIZE_BYTES
            ),
            Some("5m"),
            "critical",
            (
                "Switchyard's store disk is nearly full",
                "{{ $value | humanizePercentage }} of the data directory's file system is free. \
                 Below --min-free-disk-bytes, ingress and sources refuse events with 507 until space is freed.",
            ),
        ),
        alert(
            "SwitchyardStoreFillingUp",
            format!(
                "predict_linear({}[1h], 4 * 3600) < 0",
                m::STORE_DISK_FREE_BYTES
            ),
            Some("15m"),
            "warning",
            (
                "Switchyard's store disk will be full within 4 hours",
                "At the last hour's rate the data directory's file system fills up within 4 hours. \
                 Lower the brokers' retention, add space, or find the trigger that is not keeping up.",
            ),
        ),
        alert(
            "SwitchyardIngressFailing",
            format!(
                "sum by ({BROKER}) (rate({e}{{response_code=~\"5..\"}}[5m])) \
                 / sum by ({BROKER}) (rate({e}[5m])) > 0.01",
                e = m::EVENT_COUNT
            ),
            Some("5m"),
            "critical",
            (
                "Broker {{ $labels.namespace_name }}/{{ $labels.broker_name }} refuses events with 5xx",
                "{{ $value | humanizePercentage }} of the requests to its ingress got a 5xx answer \
                 (503: the store's queue is full; 507: the disk is full). Producers retry, but the broker is not keeping up.",
            ),
        ),
        alert(
            "SwitchyardConfigReloadFailed",
            format!("{} == 0", m::CONFIG_LAST_RELOAD_SUCCESSFUL),
            Some("5m"),
            "warning",
            (
                "Switchyard is not running the configuration on disk",
                "The last reload was refused or only partly applied; the server runs the \
                 configuration before it. /readyz and the log say why.",
            ),
        ),
        alert(
            "SwitchyardRepliesDropped",
            format!(
                "sum by ({TRIGGER}) (increase({}[10m])) > 0",
                m::REPLIES_DROPPED
            ),
            None,
            "warning",
            (
                "Trigger {{ $labels.namespace_name }}/{{ $labels.trigger_name }} drops replies in a loop",
                "{{ $value }} replies were dropped in 10 minutes because their TTL ran out: a \
                 subscriber's reply matches a trigger that leads back to it.",
            ),
        ),
    ];
    let file = RuleFile {
        groups: vec![Group {
            name: "switchyard",
            rules,
        }],
    };
    let yaml = serde_norway::to_string(&file).unwrap_or_default();
    format!(
        "# Prometheus alert rules for Switchyard, written by `switchyard monitoring alerts`\n\
         # from the metric names the server exports (spec/metrics.md). Do not edit: change\n\
         # cli/src/monitoring.rs and run `switchyard monitoring alerts > {ALERTS_FILE}`.\n{yaml}"
    )
}

/// Where the alert rules are kept in the repository.
const ALERTS_FILE: &str = "deploy/monitoring/switchyard-alerts.yaml";

/// One query of a panel: PromQL and the legend of its series.
struct Query(String, &'static str);

fn q(expr: String, legend: &'static str) -> Query {
    Query(expr, legend)
}

/// A time-series panel `w` wide (of 24), with `unit` (Grafana's unit id).
fn panel(title: &str, description: &str, unit: &str, w: u32, queries: Vec<Query>) -> Value {
    let targets: Vec<Value> = queries
        .into_iter()
        .zip('A'..)
        .map(|(Query(expr, legend), id)| {
            json!({
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "expr": expr,
                "legendFormat": legend,
                "refId": id.to_string(),
            })
        })
        .collect();
    json!({
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "gridPos": {"w": w, "h": 8},
        "targets": targets,
    })
}

fn row(title: &str) -> Value {
    json!({"type": "row", "title": title, "collapsed": false, "panels": [], "gridPos": {"w": 24, "h": 1}})
}

fn p99(histogram: &str, by: &str, filter: &str) -> String {
    format!("histogram_quantile(0.99, sum by ({by}, le) (rate({histogram}_bucket{filter}[5m])))")
}

fn rate_by(by: &str, series: &str) -> String {
    format!("sum by ({by}) (rate({series}[5m]))")
}

/// The panels, in rows.
fn panels() -> Vec<Value> {
    let t_legend = "{{namespace_name}}/{{trigger_name}}";
    let b_legend = "{{namespace_name}}/{{broker_name}}";
    vec![
        row("Ingress"),
        panel(
            "Events accepted",
            "Events stored by each broker's ingress (202), per second. Sources' events are in the Sources row.",
            "ops",
            8,
            vec![q(
                rate_by(
                    BROKER,
                    &format!("{}{{response_code=\"202\"}}", m::EVENT_COUNT),
                ),
                b_legend,
            )],
        ),
        panel(
            "Events refused",
            "Ingress answers other than 202, per second, by code: 4xx the producer must fix, 503/507 the broker cannot take them now.",
            "ops",
            8,
            vec![
                q(
                    rate_by(
                        &format!("{BROKER}, response_code"),
                        &format!("{}{{response_code!=\"202\"}}", m::EVENT_COUNT),
                    ),
                    "{{namespace_name}}/{{broker_name}} {{response_code}}",
                ),
                q(
                    rate_by("reason", m::INGRESS_REJECTED),
                    "no broker: {{reason}}",
                ),
            ],
        ),
        panel(
            "Ingress latency p99",
            "From a request's arrival to its 202, the commit to disk included.",
            "s",
            8,
            vec![q(
                p99(m::INGRESS_LATENCY, BROKER, "{response_code=\"202\"}"),
                b_legend,
            )],
        ),
        row("Delivery"),
        panel(
            "Delivery attempts by outcome",
            "Attempts per second: delivered, failed and retried (retryable), failed for good (not_retryable), refused while the subscriber is down (held).",
            "ops",
            8,
            vec![q(
                rate_by(&format!("{TRIGGER}, outcome"), m::DELIVERY_COUNT),
                "{{namespace_name}}/{{trigger_name}} {{outcome}}",
            )],
        ),
        panel(
            "Trigger lag",
            "Events each trigger still owes its subscriber: queued, in flight or waiting for a retry. Scale a function on this.",
            "short",
            8,
            vec![q(
                format!("max by ({TRIGGER}) ({})", m::TRIGGER_LAG),
                t_legend,
            )],
        ),
        panel(
            "Oldest undelivered event",
            "How long ago the oldest event a trigger still owes arrived; alerts fire above 5 minutes.",
            "s",
            8,
            vec![q(
                format!("max by ({TRIGGER}) ({})", m::TRIGGER_OLDEST_UNDELIVERED_AGE),
                t_legend,
            )],
        ),
        panel(
            "End-to-end latency p99",
            "From an event's arrival at its broker to the 2xx that delivered it, retries and backoff included.",
            "s",
            8,
            vec![q(p99(m::DELIVERY_E2E_LATENCY, TRIGGER, ""), t_legend)],
        ),
        panel(
            "Attempt latency p99",
            "How long each attempt took, failed ones included.",
            "s",
            8,
            vec![q(p99(m::DELIVERY_LATENCY, TRIGGER, ""), t_legend)],
        ),
        panel(
            "Subscriber healthy",
            "1 while a trigger's last attempt delivered, 0 after one failed.",
            "short",
            8,
            vec![q(
                format!("min by ({TRIGGER}) ({})", m::SUBSCRIBER_HEALTHY),
                t_legend,
            )],
        ),
        panel(
            "Retries and dead letters",
            "Retries scheduled and events dead-lettered per second, by trigger (and reason).",
            "ops",
            12,
            vec![
                q(
                    rate_by(TRIGGER, m::DELIVERY_RETRIES),
                    "retry {{namespace_name}}/{{trigger_name}}",
                ),
                q(
                    rate_by(&format!("{TRIGGER}, reason"), m::DEAD_LETTERS),
                    "dead letter {{namespace_name}}/{{trigger_name}} ({{reason}})",
                ),
            ],
        ),
        panel(
            "Replies dropped",
            "Reply events dropped because their TTL ran out: a reply loop.",
            "ops",
            12,
            vec![q(rate_by(TRIGGER, m::REPLIES_DROPPED), t_legend)],
        ),
        row("Store"),
        panel(
            "Commit, fsync and checkpoint p99",
            "Each commit of the store (group commit), the write-ahead log's fdatasync within it, and each checkpoint of the store's file.",
            "s",
            8,
            vec![
                q(
                    p99(m::COMMIT_SECONDS, "instance", ""),
                    "commit {{instance}}",
                ),
                q(p99(m::FSYNC_SECONDS, "instance", ""), "fsync {{instance}}"),
                q(
                    p99(m::CHECKPOINT_SECONDS, "instance", ""),
                    "checkpoint {{instance}}",
                ),
            ],
        ),
        panel(
            "Events per commit and writer queue",
            "Mean events per group commit, and append requests waiting for the writer.",
            "short",
            8,
            vec![
                q(
                    format!(
                        "sum by (instance) (rate({b}_sum[5m])) / sum by (instance) (rate({b}_count[5m]))",
                        b = m::COMMIT_BATCH_EVENTS
                    ),
                    "events per commit {{instance}}",
                ),
                q(
                    format!("max by (instance) ({})", m::WRITER_QUEUE_DEPTH),
                    "queued {{instance}}",
                ),
            ],
        ),
        panel(
            "Disk",
            "The store's files, and the space left on their file system.",
            "bytes",
            8,
            vec![
                q(
                    format!("max by (instance) ({})", m::STORE_BYTES),
                    "store {{instance}}",
                ),
                q(
                    format!("max by (instance) ({})", m::STORE_DISK_FREE_BYTES),
                    "free {{instance}}",
                ),
                q(
                    format!("max by (instance) ({})", m::STORE_DISK_SIZE_BYTES),
                    "size {{instance}}",
                ),
            ],
        ),
        row("Sources"),
        panel(
            "Source events",
            "Events each source stored in its broker, per second.",
            "ops",
            12,
            vec![q(
                rate_by("kind, source", m::SOURCE_EVENTS),
                "{{kind}} {{source}}",
            )],
        ),
        panel(
            "Malformed source input",
            "Notifications or messages a source could not read, by what became of them.",
            "ops",
            12,
            vec![q(
                rate_by("kind, source, action", m::SOURCE_MALFORMED),
                "{{kind}} {{source}} {{action}}",
            )],
        ),
        row("Server"),
        panel(
            "Configuration",
            "The configuration's generation in force, and whether it is the one on disk (1) or the last reload failed (0).",
            "short",
            12,
            vec![
                q(
                    format!("max by (instance) ({})", m::CONFIG_GENERATION),
                    "generation {{instance}}",
                ),
                q(
                    format!("min by (instance) ({})", m::CONFIG_LAST_RELOAD_SUCCESSFUL),
                    "reload successful {{instance}}",
                ),
            ],
        ),
        panel(
            "Build",
            "Which version each server runs.",
            "short",
            12,
            vec![q(
                format!("max by (instance, version) ({})", m::BUILD_INFO),
                "{{instance}} {{version}}",
            )],
        ),
    ]
}

/// Lays `panels` out left to right, a row header starting a new line.
fn lay_out(mut panels: Vec<Value>) -> Vec<Value> {
    let (mut x, mut y, mut line_h) = (0u64, 0u64, 0u64);
    for (id, p) in (1u64..).zip(panels.iter_mut()) {
        let w = p["gridPos"]["w"].as_u64().unwrap_or(24);
        let h = p["gridPos"]["h"].as_u64().unwrap_or(8);
        if x + w > 24 || p["type"] == "row" {
            y += line_h;
            x = 0;
            line_h = 0;
        }
        p["gridPos"] = json!({"x": x, "y": y, "w": w, "h": h});
        p["id"] = id.into();
        x += w;
        line_h = line_h.max(h);
    }
    panels
}

/// Every query of the dashboard, one per line: the panel's title, a tab, the PromQL (to run
/// them against a Prometheus, or to build another dashboard from).
pub fn queries() -> String {
    let mut out = String::new();
    for panel in panels() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let (Some(title), Some(expr)) = (panel["title"].as_str(), target["expr"].as_str()) {
                out.push_str(&format!("{title}\t{expr}\n"));
            }
        }
    }
    out
}

/// The Grafana dashboard (JSON), with a `datasource` variable for the Prometheus that scrapes
/// the servers.
pub fn dashboard() -> String {
    let dashboard = json!({
        "title": "Switchyard",
        "uid": "switchyard",
        "description": "Generated by `switchyard monitoring dashboard` from the metric names the server exports (spec/metrics.md).",
        "tags": ["switchyard", "cloudevents"],
        "editable": true,
        "schemaVersion": 39,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": [{
            "name": "datasource",
            "label": "Prometheus",
            "type": "datasource",
            "query": "prometheus",
        }]},
        "panels": lay_out(panels()),
    });
    let mut text = serde_json::to_string_pretty(&dashboard).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_panels_are_laid_out_in_rows_without_overlap() {
        let d: Value = serde_json::from_str(&dashboard()).unwrap();
        let mut cells = std::collections::HashSet::new();
        for p in d["panels"].as_array().unwrap() {
            let g = &p["gridPos"];
            let (x, y, w, h) = (
                g["x"].as_u64().unwrap(),
                g["y"].as_u64().unwrap(),
                g["w"].as_u64().unwrap(),
                g["h"].as_u64().unwrap(),
            );
            assert!(x + w <= 24, "{p}");
            for cx in x..x + w {
                for cy in y..y + h {
                    assert!(cells.insert((cx, cy)), "panels overlap at {cx},{cy}: {p}");
                }
            }
        }
    }

    #[test]
    fn the_alert_rules_are_yaml_with_every_alert_named_once() {
        let rules: serde_json::Value = serde_norway::from_str(&alert_rules()).unwrap();
        let names: Vec<&str> = rules["groups"][0]["rules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["alert"].as_str().unwrap())
            .collect();
        let unique: std::collections::HashSet<_> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        assert!(names.contains(&"SwitchyardTriggerLagging"));
    }
}
