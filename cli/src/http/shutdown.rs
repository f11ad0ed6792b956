//! The accept loop and graceful shutdown.
//!
//! On the first SIGTERM or SIGINT the server drains: every new request is answered 503 (the
//! listener stays open so clients get an answer rather than a refused connection), in-flight
//! requests run on for up to `--shutdown-timeout`, then whatever is left is aborted, so each
//! stream still ends with a final event (`finish_reason: "abort"`) and `[DONE]`. Connections
//! are then closed once their responses are written. A second signal exits at once.

use super::Shared;
use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt;

/// After the drain, how long connections get to write their last responses.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// After aborting what outlived the drain, how long the engine gets to end those requests.
const ABORT_GRACE: Duration = Duration::from_secs(5);
/// How often the drain looks at the engine's in-flight count.
const POLL: Duration = Duration::from_millis(20);

/// SIGTERM and SIGINT, installed before the server says it listens.
pub struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    /// Installs the handlers.
    pub fn install() -> anyhow::Result<Self> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

/// File descriptors kept for what is not a client connection (the model file, logs, ...).
const SPARE_FDS: u64 = 64;

/// Raises the open-file limit as far as the system allows and fits `--max-connections` under
/// it, so that a flood of connections waits in the backlog instead of failing `accept`.
fn connection_slots(wanted: usize) -> usize {
    let wanted = wanted.max(1);
    match rlimit::increase_nofile_limit(wanted as u64 + SPARE_FDS) {
        Ok(limit) if limit < wanted as u64 + SPARE_FDS => {
            let fit = limit.saturating_sub(SPARE_FDS).max(1) as usize;
            tracing::warn!(
                wanted,
                open_file_limit = limit,
                "--max-connections lowered to {fit} to fit the open-file limit"
            );
            fit
        }
        Ok(_) => wanted,
        Err(e) => {
            tracing::warn!(error = %e, "could not read the open-file limit");
            wanted
        }
    }
}

async fn accept(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
) -> Option<(TcpStream, OwnedSemaphorePermit)> {
    let permit = Arc::clone(slots).acquire_owned().await.ok()?;
    match listener.accept().await {
        Ok((stream, _)) => Some((stream, permit)),
        Err(e) => {
            // Out of file descriptors or a connection reset before accept: back off briefly.
            tracing::warn!(error = %e, "accept failed");
            tokio::time::sleep(Duration::from_millis(50)).await;
            None
        }
    }
}

/// Serves connections until the drain has finished, then closes them gracefully.
pub async fn run<S>(listener: TcpListener, service: S, st: Shared, mut signals: Signals)
where
    S: tower::Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let slots = Arc::new(Semaphore::new(connection_slots(st.limits.max_connections)));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(st.limits.header_timeout);
    {
        let drained = drain(st.clone(), &mut signals);
        tokio::pin!(drained);
        loop {
            tokio::select! {
                accepted = accept(&listener, &slots) => {
                    let Some((stream, permit)) = accepted else { continue };
                    let svc = service.clone();
                    let hyper_svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                        svc.clone().oneshot(req.map(Body::new))
                    });
                    let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), hyper_svc));
                    tokio::spawn(async move {
                        if let Err(e) = conn.await {
                            tracing::debug!(error = %e, "connection ended with an error");
                        }
                        drop(permit);
                    });
                }
                () = &mut drained => break,
            }
        }
    }
    drop(listener);
    // A second signal while the connections close still exits at once.
    tokio::spawn(async move {
        signals.next().await;
        std::process::exit(130);
    });
    if tokio::time::timeout(CLOSE_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the drain; closing them");
    }
}

/// Waits for the first signal, then drains the engine; returns when it is empty.
async fn drain(st: Shared, signals: &mut Signals) {
    signals.next().await;
    st.draining.store(true, Ordering::Release);
    let in_flight = st.engine.in_flight();
    tracing::info!(in_flight, "shutting down: draining in-flight requests");
    eprintln!(
        "radixserve: draining {in_flight} requests (up to {:?}; a second signal exits now)",
        st.limits.shutdown_timeout
    );
    let second = async {
        signals.next().await;
        eprintln!("radixserve: second signal, exiting now");
        std::process::exit(130);
    };
    let wait = async {
        if !wait_empty(&st, st.limits.shutdown_timeout).await {
            tracing::warn!(
                left = st.engine.in_flight(),
                "shutdown timeout reached; aborting the remaining requests"
            );
            st.engine.abort_all("the server is shutting down");
            wait_empty(&st, ABORT_GRACE).await;
        }
    };
    tokio::select! {
        () = second => {}
        () = wait => {}
    }
}

/// Waits until the engine has no request in flight; false if `limit` passed first.
async fn wait_empty(st: &Shared, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while st.engine.in_flight() > 0 {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
    true
}
