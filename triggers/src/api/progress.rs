//! Progress of a bulk change of the dead-letter API (a redrive, a purge): the change runs as
//! a task of the API, and a caller that asks for JSON lines follows its count
//! (spec/management-api.md, "Progress of a redrive or a purge").

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use switchyard_broker::problem::Problem;
use switchyard_broker::tasks::Tasks;

use super::json;

/// Runs `op`, a bulk change (redrive, purge) that reports how many it has done so far to the
/// sender it is given, as a task of `tasks`, so that it runs to its end whatever the caller
/// does; answers `{key: n}` (or its problem). A caller that asked for `application/x-ndjson`
/// gets, once the change has started (its first chunk done, so every refusal before it is
/// still a 4xx), JSON lines: `{"progress": n}` every quarter second while the count moves,
/// then `{key: n}` or `{"problem": {…}}`. `switchyard dlq` asks for the lines to show a
/// counter.
pub(crate) async fn with_progress<F>(
    tasks: &std::sync::Mutex<Tasks>,
    headers: &axum::http::HeaderMap,
    key: &'static str,
    op: impl FnOnce(tokio::sync::watch::Sender<usize>) -> F,
) -> Result<Response, Problem>
where
    F: std::future::Future<Output = Result<usize, Problem>> + Send + 'static,
{
    let lines = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/x-ndjson"));
    let (tx, mut rx) = tokio::sync::watch::channel(0usize);
    let (done_tx, mut done) = tokio::sync::oneshot::channel();
    let op = op(tx);
    tasks
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .spawn(async move {
            let _ = done_tx.send(op.await);
        });
    let ended = |r: Result<Result<usize, Problem>, _>| match r {
        Ok(result) => result,
        Err(_) => Err(Problem::storage_failure()),
    };
    if !lines {
        let n = ended(done.await)?;
        return Ok(json(StatusCode::OK, &serde_json::json!({ key: n })));
    }
    // Streaming starts once the change has made progress; ended before (refused, or nothing
    // to do), it answers as usual. (Its end drops the sender, which also wakes `changed`.)
    let ended_early = tokio::select! {
        biased;
        r = &mut done => Some(r),
        changed = rx.changed() => match changed {
            Ok(()) => None,
            Err(_) => Some((&mut done).await),
        },
    };
    if let Some(r) = ended_early {
        let n = ended(r)?;
        return Ok(json(StatusCode::OK, &serde_json::json!({ key: n })));
    }
    let line = |v: serde_json::Value| {
        let mut text = v.to_string();
        text.push('\n');
        Ok::<_, std::convert::Infallible>(axum::body::Bytes::from(text))
    };
    let first = line(serde_json::json!({ "progress": *rx.borrow_and_update() }));
    let state = (done, rx, false);
    let rest =
        futures_util::stream::unfold(state, move |(mut done, mut rx, finished)| async move {
            if finished {
                return None;
            }
            tokio::select! {
                r = &mut done => {
                    let last = match ended(r) {
                        Ok(n) => serde_json::json!({ key: n }),
                        Err(p) => serde_json::json!({ "problem": p }),
                    };
                    Some((line(last), (done, rx, true)))
                }
                () = async {
                    let _ = rx.changed().await;
                    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                } => {
                    let n = *rx.borrow_and_update();
                    Some((line(serde_json::json!({ "progress": n })), (done, rx, false)))
                }
            }
        });
    let stream = futures_util::StreamExt::chain(futures_util::stream::iter([first]), rest);
    Ok((
        StatusCode::OK,
        [(axum::http::header::CONTENT_TYPE, "application/x-ndjson")],
        axum::body::Body::from_stream(stream),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn asking_for_lines() -> axum::http::HeaderMap {
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(
            axum::http::header::ACCEPT,
            axum::http::HeaderValue::from_static("application/x-ndjson"),
        );
        headers
    }

    async fn body_text(r: Response) -> String {
        let bytes = axum::body::to_bytes(r.into_body(), usize::MAX)
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn a_bulk_change_streams_its_progress_once_it_has_started() {
        let tasks = std::sync::Mutex::new(Tasks::new("test"));
        let (go, wait) = tokio::sync::oneshot::channel::<()>();
        let r = with_progress(&tasks, &asking_for_lines(), "redriven", |p| async move {
            p.send_replace(100);
            let _ = wait.await;
            p.send_replace(200);
            Ok(200)
        })
        .await
        .unwrap();
        assert_eq!(
            r.headers()[axum::http::header::CONTENT_TYPE],
            "application/x-ndjson"
        );
        go.send(()).unwrap();
        let text = body_text(r).await;
        assert!(text.starts_with("{\"progress\":100}\n"), "{text}");
        assert!(text.ends_with("{\"redriven\":200}\n"), "{text}");
    }

    #[tokio::test]
    async fn a_bulk_change_refused_before_it_started_is_a_4xx_even_to_a_follower() {
        let tasks = std::sync::Mutex::new(Tasks::new("test"));
        let refused = with_progress(&tasks, &asking_for_lines(), "redriven", |_| async {
            Err(Problem::not_found("no dead letter 1"))
        })
        .await;
        assert_eq!(refused.unwrap_err().status(), StatusCode::NOT_FOUND);
        let nothing = with_progress(&tasks, &asking_for_lines(), "purged", |_| async { Ok(0) })
            .await
            .unwrap();
        assert_eq!(body_text(nothing).await, r#"{"purged":0}"#);
    }
}
