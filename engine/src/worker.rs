//! The scheduler thread: owns the router's scheduler and the model runner, applies commands
//! from the engine's handles, runs steps, and sends each request's tokens to its stream.

use crate::error::EngineError;
use crate::types::{EngineStats, Usage};
use crossbeam_channel::{Receiver, Sender};
use router::{Event, FinishReason, ModelRunner, Req, ReqId, SampledToken, Scheduler};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;

/// What the scheduler thread tells one request's stream.
#[derive(Debug)]
pub(crate) enum Update {
    Token(SampledToken),
    /// The scored prompt, before the first token.
    Prompt(Vec<SampledToken>),
    /// A chunk of the prompt was computed: (total, cached, processed).
    Progress(usize, usize, usize),
    Finished {
        reason: FinishReason,
        usage: Usage,
    },
}

/// What the engine's handles ask of the scheduler thread.
pub(crate) enum Command {
    Add {
        req: Box<Req>,
        out: UnboundedSender<Update>,
    },
    Abort {
        id: ReqId,
    },
    AbortAll {
        message: String,
    },
    Finish {
        id: ReqId,
        reason: FinishReason,
    },
    Flush {
        reply: Sender<Result<(), EngineError>>,
    },
    Shutdown,
}

/// The scheduler thread's state.
pub(crate) struct Worker<R> {
    sched: Scheduler,
    runner: R,
    outputs: HashMap<ReqId, UnboundedSender<Update>>,
    stats: Arc<Mutex<EngineStats>>,
    steps: u64,
    shutting_down: bool,
}

impl<R: ModelRunner> Worker<R> {
    pub(crate) fn new(sched: Scheduler, runner: R, stats: Arc<Mutex<EngineStats>>) -> Self {
        Worker {
            sched,
            runner,
            outputs: HashMap::new(),
            stats,
            steps: 0,
            shutting_down: false,
        }
    }

    /// Runs until shutdown (after in-flight requests were aborted) or until every handle is gone.
    pub(crate) fn run(mut self, commands: Receiver<Command>) {
        self.publish_stats();
        loop {
            if self.sched.is_idle() {
                if self.shutting_down {
                    break;
                }
                match commands.recv_timeout(Duration::from_millis(200)) {
                    Ok(cmd) => self.handle(cmd),
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => continue,
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
                }
            }
            while let Ok(cmd) = commands.try_recv() {
                self.handle(cmd);
            }
            if self.shutting_down {
                self.abort_all("the server is shutting down");
            }
            self.step();
        }
        self.snapshot();
        tracing::info!("scheduler thread stopped");
    }

    /// Writes the cache to the disk tier, if there is one, for the next start.
    fn snapshot(&mut self) {
        if self.sched.kv().disk_tier().is_none() {
            return;
        }
        let Some(xfer) = self.runner.kv_transfer() else {
            return;
        };
        let started = std::time::Instant::now();
        let blocks = self.sched.snapshot(xfer);
        tracing::info!(
            blocks,
            seconds = started.elapsed().as_secs_f64(),
            "cache written to disk for the next start"
        );
        self.publish_stats();
    }

    fn step(&mut self) {
        if let Err(e) = self.sched.step(&mut self.runner) {
            tracing::error!(error = %e, "scheduler invariant violated");
        }
        self.steps += 1;
        // Stats first: a client that reads the metrics after its response must see the step
        // that produced it (its cache insert included).
        self.publish_stats();
        let mut freed = false;
        for event in self.sched.take_events() {
            freed |= self.deliver(event);
        }
        if freed {
            // Delivery freed the requests of clients that went away.
            self.publish_stats();
        }
    }

    /// Hands one event to its client; true when the client was gone and its request was freed.
    fn deliver(&mut self, event: Event) -> bool {
        match event {
            Event::Token {
                id,
                token,
                logprob,
                alternatives,
            } => {
                let sampled = SampledToken {
                    token,
                    logprob,
                    alternatives,
                };
                let delivered = self
                    .outputs
                    .get(&id)
                    .is_some_and(|tx| tx.send(Update::Token(sampled)).is_ok());
                if !delivered {
                    // The client went away: free what the request holds.
                    self.sched.abort(id, "the client disconnected");
                }
                !delivered
            }
            Event::Progress {
                id,
                total,
                cached,
                processed,
            } => {
                // A client gone by now is noticed at its next token.
                if let Some(tx) = self.outputs.get(&id) {
                    let _ = tx.send(Update::Progress(total, cached, processed));
                }
                false
            }
            Event::Prompt { id, input_logprobs } => {
                // A client gone by now is noticed at its next token.
                if let Some(tx) = self.outputs.get(&id) {
                    let _ = tx.send(Update::Prompt(input_logprobs));
                }
                false
            }
            Event::Finished {
                id,
                reason,
                prompt_tokens,
                completion_tokens,
                cached_tokens,
            } => {
                if let Some(tx) = self.outputs.remove(&id) {
                    // A receiver gone by now has nothing left to free.
                    let _ = tx.send(Update::Finished {
                        reason,
                        usage: Usage {
                            prompt_tokens,
                            completion_tokens,
                            cached_tokens,
                        },
                    });
                }
                false
            }
        }
    }

    pub(crate) fn publish_stats(&self) {
        if let Ok(mut s) = self.stats.lock() {
            *s = EngineStats {
                counters: self.sched.counters(),
                cache: self.sched.kv().tree().stats(),
                kv: self.sched.kv().accounting(),
                waiting: self.sched.num_waiting(),
                running: self.sched.num_running(),
                steps: self.steps,
                namespaces: self.sched.kv().tree().num_namespaces(),
                tier: self.sched.kv().tier_stats(),
            };
        }
    }

    fn abort_all(&mut self, message: &str) {
        let ids: Vec<ReqId> = self.outputs.keys().copied().collect();
        for id in ids {
            self.sched.abort(id, message);
        }
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Add { req, out } => self.add(*req, out),
            Command::Abort { id } => {
                self.sched.abort(id, "aborted by the client");
            }
            Command::AbortAll { message } => self.abort_all(&message),
            Command::Finish { id, reason } => {
                self.sched.finish_early(id, reason);
            }
            Command::Flush { reply } => {
                let result = self.sched.flush_cache().map_err(EngineError::from);
                self.publish_stats();
                // The caller may have stopped waiting; the flush happened all the same.
                let _ = reply.send(result);
            }
            Command::Shutdown => self.shutting_down = true,
        }
    }

    fn add(&mut self, req: Req, out: UnboundedSender<Update>) {
        if out.is_closed() {
            return; // The client left before its request reached the scheduler.
        }
        let id = req.id;
        let prompt_tokens = req.prompt.len();
        match self.sched.add_request(req) {
            Ok(()) => {
                self.outputs.insert(id, out);
            }
            Err(e) => {
                // The engine checks the same limits before queueing, so this is rare; the
                // stream reports it as an abort with the reason.
                let _ = out.send(Update::Finished {
                    reason: FinishReason::Abort {
                        message: e.to_string(),
                    },
                    usage: Usage {
                        prompt_tokens,
                        ..Usage::default()
                    },
                });
            }
        }
    }
}
