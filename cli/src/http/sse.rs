//! Server-sent event responses: first chunks, one chunk per event, then either the usage chunk
//! (when asked) and `[DONE]`, or, if the engine failed, an error event and no `[DONE]`.
//! Keep-alive comments go out while no event is due, so idle streams stay open through proxies
//! and a vanished client is noticed.

use super::error::ApiError;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, BoxStream, Stream, StreamExt};
use serde::Serialize;
use std::convert::Infallible;
use std::time::Duration;

/// Token totals so far: (prompt, completion, cached).
pub type Totals = (usize, usize, usize);

/// What a route's event stream yields.
pub enum Item {
    /// Chunks to send (maybe none), and the totals after them.
    Data(Vec<String>, Totals),
    /// The engine failed: end the stream with an error event.
    Fail(ApiError),
}

#[derive(Serialize)]
struct ErrorEvent<'a> {
    error: super::error::ErrorDetail<'a>,
}

struct Body<U> {
    events: BoxStream<'static, Item>,
    usage: Option<U>,
    totals: Totals,
    finished: bool,
    /// End with `data: [DONE]` (the OpenAI and SGLang shapes; llama.cpp's native one has none).
    done: bool,
}

impl<U: FnOnce(Totals) -> Option<String>> Body<U> {
    /// The next events to send; `None` after the last.
    async fn next(&mut self) -> Option<Vec<Event>> {
        if self.finished {
            return None;
        }
        loop {
            match self.events.next().await {
                Some(Item::Data(data, totals)) => {
                    self.totals = totals;
                    if !data.is_empty() {
                        return Some(data.into_iter().map(|d| Event::default().data(d)).collect());
                    }
                }
                Some(Item::Fail(e)) => {
                    self.finished = true;
                    let data = serde_json::to_string(&ErrorEvent { error: e.detail() })
                        .unwrap_or_else(|_| "{\"error\":{}}".into());
                    return Some(vec![Event::default().data(data)]);
                }
                None => {
                    self.finished = true;
                    let mut out = Vec::new();
                    if let Some(u) = self.usage.take().and_then(|u| u(self.totals)) {
                        out.push(Event::default().data(u));
                    }
                    if self.done {
                        out.push(Event::default().data("[DONE]"));
                    }
                    return Some(out);
                }
            }
        }
    }
}

/// An SSE response: `first` chunks, then `events`, then `usage(totals)` if it gives a chunk.
pub fn response<S, U>(first: Vec<String>, events: S, usage: U, keep_alive: Duration) -> Response
where
    S: Stream<Item = Item> + Send + 'static,
    U: FnOnce(Totals) -> Option<String> + Send + 'static,
{
    build(first, events, usage, keep_alive, true)
}

/// An SSE response of `events` alone: no usage chunk and no `[DONE]` (llama.cpp's native
/// streams), still ending with an error event if the engine fails.
pub fn events_only<S>(events: S, keep_alive: Duration) -> Response
where
    S: Stream<Item = Item> + Send + 'static,
{
    build(Vec::new(), events, |_| None, keep_alive, false)
}

fn build<S, U>(
    first: Vec<String>,
    events: S,
    usage: U,
    keep_alive: Duration,
    done: bool,
) -> Response
where
    S: Stream<Item = Item> + Send + 'static,
    U: FnOnce(Totals) -> Option<String> + Send + 'static,
{
    let head = stream::iter(first.into_iter().map(|d| Event::default().data(d)));
    let body = Body {
        events: events.boxed(),
        usage: Some(usage),
        totals: (0, 0, 0),
        finished: false,
        done,
    };
    let rest = stream::unfold(body, |mut b| async move {
        let out = b.next().await?;
        Some((stream::iter(out), b))
    })
    .flatten();
    let all = head.chain(rest).map(Ok::<_, Infallible>);
    Sse::new(all)
        .keep_alive(KeepAlive::new().interval(keep_alive))
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body_of(r: Response) -> String {
        let bytes = r
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .to_vec();
        String::from_utf8(bytes).expect("utf-8")
    }

    #[tokio::test]
    async fn a_finished_stream_ends_with_usage_and_done() {
        let events = stream::iter(vec![
            Item::Data(vec!["one".into()], (3, 1, 0)),
            Item::Data(Vec::new(), (3, 2, 0)),
        ]);
        let r = response(
            vec!["first".into()],
            events,
            |(p, c, _)| Some(format!("usage {p} {c}")),
            Duration::from_secs(15),
        );
        assert_eq!(
            body_of(r).await,
            "data: first\n\ndata: one\n\ndata: usage 3 2\n\ndata: [DONE]\n\n"
        );
    }

    #[tokio::test]
    async fn a_failed_engine_ends_the_stream_with_an_error_event_and_no_done() {
        let events = stream::iter(vec![
            Item::Data(vec!["one".into()], (0, 0, 0)),
            Item::Fail(ApiError::from(engine::EngineError::Closed)),
            Item::Data(vec!["never".into()], (0, 0, 0)),
        ]);
        let r = response(Vec::new(), events, |_| None, Duration::from_secs(15));
        let body = body_of(r).await;
        assert!(body.starts_with("data: one\n\ndata: {\"error\":"), "{body}");
        assert!(body.contains("\"code\":503"), "{body}");
        assert!(
            !body.contains("[DONE]") && !body.contains("never"),
            "{body}"
        );
    }
}
