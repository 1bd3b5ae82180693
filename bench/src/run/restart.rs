//! Restart after `kill -9` with a backlog: fill, kill, restart, time until listening,
//! accepting and re-queued; RAM per queued event.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use bytes::Bytes;
use serde_json::{Value, json};

use super::*;

/// Posts `batches` copies of the batch `body` to `url`, 16 at a time, retrying refusals.
pub(super) async fn fill_batches(client: &reqwest::Client, url: &str, body: &Bytes, batches: u64) {
    let next = Arc::new(AtomicU64::new(0));
    let mut senders = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (client, url, body, next) = (
            client.clone(),
            url.to_owned(),
            body.clone(),
            Arc::clone(&next),
        );
        senders.spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < batches {
                for _ in 0..1000 {
                    let r = client
                        .post(&url)
                        .header("content-type", "application/cloudevents-batch+json")
                        .body(body.clone())
                        .send()
                        .await;
                    if r.is_ok_and(|r| r.status().is_success()) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        });
    }
    while senders.join_next().await.is_some() {}
}

/// Waits (up to 120 s) until the trigger owes about `events` (within 10: the held trigger
/// may deliver one now and then); `switchyard_trigger_lag_events` updates every second.
pub(super) async fn wait_lag(client: &reqwest::Client, metrics_url: &str, events: f64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let lag = async {
            let text = client
                .get(metrics_url)
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            text.lines()
                .find(|l| l.starts_with("switchyard_trigger_lag_events"))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<f64>().ok())
        }
        .await;
        if lag.unwrap_or(0.0) >= events - 10.0 {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The restart workload: `n` events queued behind a trigger that is (nearly) never allowed to
/// deliver, RSS before and after, then `kill -9` and the time until the restarted broker
/// takes an event again and until its trigger has all `n` queued again.
pub(super) async fn restart_with_backlog(args: &RunArgs, sink_url: &str, n: u64) -> Result<Value> {
    let config = format!(
        "{BROKER}{}",
        trigger("held", "", &format!("{sink_url}held"), "rateLimit: 0.001, ")
    );
    let broker = start_switchyard(&args.switchyard, &config, true)?;
    let pid = broker.child.id();
    let client = reqwest::Client::builder().no_proxy().build()?;
    // Let the idle server settle before reading its baseline.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_idle = proc_usage(pid).1;
    // Batches of 100 events, 16 in flight.
    let per_batch = 100u64;
    let event = json!({
        "specversion": "1.0", "id": "x", "source": "/bench", "type": "com.example.bench",
        "datacontenttype": "text/plain", "data": "x".repeat(args.payload_bytes),
    });
    let body = Bytes::from(serde_json::to_vec(&vec![event; per_batch as usize])?);
    let url = format!("{}/default/default", broker.base);
    let batches = n.div_ceil(per_batch);
    let queued = batches * per_batch;
    let lag_url = format!("{}/metrics", broker.base);
    // Half the backlog, then the rest: RSS at both shows what each queued event adds once
    // redb's page cache (bounded, 64 MiB by default) has filled.
    let fill_started = Instant::now();
    fill_batches(&client, &url, &body, batches / 2).await;
    let mut complete = wait_lag(&client, &lag_url, (batches / 2 * per_batch) as f64).await;
    let rss_half = proc_usage(pid).1;
    fill_batches(&client, &url, &body, batches - batches / 2).await;
    let fill_s = fill_started.elapsed().as_secs_f64();
    // The trigger may deliver one event a while (rateLimit 0.001/s): "all" is within 10.
    let all = queued as f64;
    complete &= wait_lag(&client, &lag_url, all).await;
    let rss_full = proc_usage(pid).1;
    let mut broker = broker;
    let _ = broker.child.kill();
    let _ = broker.child.wait();
    let restart_started = Instant::now();
    let (child, base) = spawn_switchyard(&args.switchyard, &broker.dir, true, &[])?;
    broker.child = child;
    broker.base = base;
    let listening_ms = restart_started.elapsed().as_secs_f64() * 1e3;
    let url = format!("{}/default/default", broker.base);
    loop {
        let r = client
            .post(&url)
            .header("ce-specversion", "1.0")
            .header("ce-id", "after-restart")
            .header("ce-source", "/bench")
            .header("ce-type", "com.example.bench")
            .body("x")
            .send()
            .await;
        if r.is_ok_and(|r| r.status().as_u16() == 202) {
            break;
        }
        if restart_started.elapsed() > Duration::from_secs(120) {
            bail!("the restarted broker took no event within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let accepting_ms = restart_started.elapsed().as_secs_f64() * 1e3;
    let lag_url = format!("{}/metrics", broker.base);
    complete &= wait_lag(&client, &lag_url, all).await;
    let requeued_ms = restart_started.elapsed().as_secs_f64() * 1e3;
    let rss_restarted = proc_usage(broker.child.id()).1;
    drop(broker);
    Ok(json!({
        "queued": queued,
        "fill_s": fill_s,
        "restart_listening_ms": listening_ms,
        "restart_accepting_ms": accepting_ms,
        "restart_requeued_ms": requeued_ms,
        "rss_idle_bytes": rss_idle,
        "rss_half_bytes": rss_half,
        "rss_full_bytes": rss_full,
        "rss_bytes_per_queued_event_marginal": (rss_full.saturating_sub(rss_half)) as f64 / ((batches - batches / 2) * per_batch) as f64,
        "complete": complete,
        "rss_restarted_bytes": rss_restarted,
        "rss_bytes_per_queued_event": (rss_full.saturating_sub(rss_idle)) as f64 / queued as f64,
        "rss_bytes_per_queued_event_after_restart": (rss_restarted.saturating_sub(rss_idle)) as f64 / queued as f64,
    }))
}
