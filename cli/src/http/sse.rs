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
    /// A chunk to send (or nothing), and the totals after it.
    Data(Option<String>, Totals),
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
                    if let Some(d) = data {
                        return Some(vec![Event::default().data(d)]);
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
                    out.push(Event::default().data("[DONE]"));
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
    let head = stream::iter(first.into_iter().map(|d| Event::default().data(d)));
    let body = Body {
        events: events.boxed(),
        usage: Some(usage),
        totals: (0, 0, 0),
        finished: false,
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
