//! The scheduler: one forward per [`Scheduler::step`], prefill first (with the running
//! requests' decode tokens when mixing), else decode.
//!
//! One file per concern:
//! - `config.rs`: [`SchedulerConfig`] and SGLang's constants;
//! - `prefill.rs`: ordering the queue, admitting requests under the prefill budget, running an
//!   extend batch (whole prompts or chunks) and caching the computed prompts;
//! - `decode.rs`: one token for every running request;
//! - `mixed.rs`: MIXED steps, a prefill batch with the running requests' decode tokens;
//! - `dedup.rs`: passing over requests whose uncached prefix the prefill batch computes;
//! - `retract.rs`: making decode room under memory pressure (retraction, `new_token_ratio`);
//! - `forward.rs`: the call into the [`ModelRunner`] and what a failed forward does;
//! - `finish.rs`: ending admitted requests (their KV goes to the cache) and pending finishes;
//! - `events.rs`: the [`Event`]s and [`StepReport`]s the scheduler reports;
//! - `counters.rs`: [`Counters`].
//!
//! A request is in exactly one place: the waiting queue (it holds no KV), the running batch, or
//! the one mid-prefill slot (`chunked`). The two latter hold it as an [`Admitted`], with the
//! request row of its KV.

mod config;
mod counters;
mod decode;
mod dedup;
mod events;
mod finish;
mod forward;
mod mixed;
mod prefill;
mod retract;

pub use config::SchedulerConfig;
pub use counters::Counters;
pub use events::{Event, StepReport};
pub use retract::{retract_ratio, retraction_order};

use crate::batch::ModelRunner;
use crate::error::RouterError;
use crate::limits::TokenLimit;
use crate::policy::{order_policy, OrderPolicy, Policy};
use crate::request::{FinishReason, Req, ReqId, ReqStatus};
use page_manager::tier::{DiskTier, KvTransfer};
use page_manager::{Accounting, KvCacheManager, KvError, RowId};
use retract::NewTokenRatio;
use std::collections::HashSet;

/// Says why a lookup of an admitted request's row cannot fail.
const ROW_IN_USE: &str = "an admitted request's row stays in use until it is released";

/// A request that holds KV (mid-prefill or decoding) and the request row that maps its
/// positions to KV slots. The row is released exactly once, by consuming this value.
#[derive(Debug)]
struct Admitted {
    req: Req,
    row: RowId,
}

/// SGLang's scheduler over a [`KvCacheManager`].
#[derive(Debug)]
pub struct Scheduler {
    cfg: SchedulerConfig,
    /// The policy in effect (see [`Scheduler::policy`]) and its ordering.
    policy: Policy,
    ordering: Box<dyn OrderPolicy>,
    kv: KvCacheManager,
    /// Boxed so that reordering a long queue moves pointers, not requests (measured: moving
    /// whole requests dominated the step time with 10,000 waiting).
    #[allow(clippy::vec_box)]
    waiting: Vec<Box<Req>>,
    running: Vec<Admitted>,
    /// The request whose prompt is being computed in chunks (at most one).
    chunked: Option<Admitted>,
    /// Ids of the queued and running requests.
    ids: HashSet<ReqId>,
    events: Vec<Event>,
    counters: Counters,
    ratio: NewTokenRatio,
    /// Requests accepted so far (the next arrival number).
    arrivals: u64,
    /// The first KV operation that failed during this step (see `kv_fault`).
    fault: Option<KvError>,
}

impl Scheduler {
    /// A scheduler with an empty queue and an empty cache.
    pub fn new(cfg: SchedulerConfig) -> Result<Self, RouterError> {
        cfg.validate()?;
        let kv = KvCacheManager::new(&cfg.manager_config())?;
        let policy = cfg.effective_policy();
        Ok(Scheduler {
            policy,
            ordering: order_policy(policy, &cfg),
            kv,
            waiting: Vec::new(),
            running: Vec::new(),
            chunked: None,
            ids: HashSet::new(),
            events: Vec::new(),
            counters: Counters::default(),
            ratio: NewTokenRatio::new(cfg.schedule_conservativeness),
            arrivals: 0,
            fault: None,
            cfg,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &SchedulerConfig {
        &self.cfg
    }

    /// The policy in effect (FCFS when a cache-aware one was asked for without a cache).
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// The KV bookkeeping (read-only).
    pub fn kv(&self) -> &KvCacheManager {
        &self.kv
    }

    /// The counters.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Requests waiting.
    pub fn num_waiting(&self) -> usize {
        self.waiting.len()
    }

    /// The token budget of one request (the check `add_request` applies).
    pub fn token_limit(&self) -> TokenLimit {
        TokenLimit {
            context_length: self.cfg.context_length,
            kv_capacity: self.kv.capacity(),
        }
    }

    /// Requests admitted (decoding or mid-prefill).
    pub fn num_running(&self) -> usize {
        self.running.len() + usize::from(self.chunked.is_some())
    }

    /// No request is queued or running.
    pub fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.running.is_empty() && self.chunked.is_none()
    }

    /// The decode-reservation ratio currently in use.
    pub fn new_token_ratio(&self) -> f64 {
        self.ratio.value()
    }

    /// Ids of the waiting requests, in queue order.
    pub fn waiting_ids(&self) -> Vec<ReqId> {
        self.waiting.iter().map(|r| r.id).collect()
    }

    /// Orders the waiting queue as the next prefill round would and returns the ids in that
    /// order (for inspection: the requests stay queued).
    pub fn preview_order(&mut self) -> Vec<ReqId> {
        self.order_waiting();
        self.waiting_ids()
    }

    /// Takes the events produced since the last call.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// Queues a request after checking that it can be served.
    pub fn add_request(&mut self, mut req: Req) -> Result<(), RouterError> {
        if self.ids.contains(&req.id) {
            return Err(RouterError::DuplicateId(req.id));
        }
        req.validate(self.token_limit())?;
        req.status = ReqStatus::Waiting;
        req.arrival = self.arrivals;
        self.arrivals += 1;
        self.ids.insert(req.id);
        self.counters.requests += 1;
        self.waiting.push(Box::new(req));
        Ok(())
    }

    /// Aborts a request: a queued one leaves at once; a running one finishes at the next step
    /// (its computed KV is kept in the cache, as SGLang does). Returns false for an unknown id.
    pub fn abort(&mut self, id: ReqId, message: &str) -> bool {
        self.finish_early(
            id,
            FinishReason::Abort {
                message: message.to_string(),
            },
        )
    }

    /// Ends a request with the given reason (used for stop strings matched on decoded text).
    /// A queued request leaves at once, a running one at the next step.
    pub fn finish_early(&mut self, id: ReqId, reason: FinishReason) -> bool {
        if let Some(pos) = self.waiting.iter().position(|r| r.id == id) {
            let req = self.waiting.remove(pos);
            self.complete(*req, reason);
            return true;
        }
        let target = self
            .running
            .iter_mut()
            .chain(self.chunked.iter_mut())
            .find(|a| a.req.id == id);
        match target {
            Some(a) => {
                a.req.pending_finish.get_or_insert(reason);
                true
            }
            None => false,
        }
    }

    /// Empties the prefix cache; refused while requests are queued or running.
    pub fn flush_cache(&mut self) -> Result<(), RouterError> {
        if !self.is_idle() {
            return Err(RouterError::Busy(self.waiting.len() + self.num_running()));
        }
        self.kv.flush()?;
        Ok(())
    }

    /// Adds a disk tier below the KV pool (see [`page_manager::tier`]); the runner passed to
    /// [`Scheduler::step`] must then offer [`ModelRunner::kv_transfer`].
    pub fn attach_disk_tier(&mut self, tier: DiskTier) -> Result<(), RouterError> {
        self.kv.attach_disk_tier(tier)?;
        Ok(())
    }

    /// Writes every cached prefix that is not on disk yet (a graceful shutdown's snapshot);
    /// returns the blocks written. Without a disk tier, does nothing.
    pub fn snapshot(&mut self, xfer: &dyn KvTransfer) -> usize {
        self.kv.snapshot(xfer)
    }

    /// Checks the KV accounting (every slot in exactly one place), that every admitted request
    /// holds one row, and that each request's status says where it is.
    pub fn check_invariants(&self) -> Result<Accounting, RouterError> {
        let acc = self.kv.check_accounting()?;
        let fail = |m: String| Err(RouterError::Kv(KvError::Accounting(m)));
        let rows = self.num_running();
        if rows != acc.active_rows {
            return fail(format!(
                "{rows} admitted requests but {} rows in use",
                acc.active_rows
            ));
        }
        let misplaced = self
            .waiting
            .iter()
            .map(|r| (&**r, ReqStatus::Waiting))
            .chain(self.chunked.iter().map(|a| (&a.req, ReqStatus::Prefilling)))
            .chain(self.running.iter().map(|a| (&a.req, ReqStatus::Decoding)))
            .find(|(r, status)| r.status != *status);
        if let Some((r, status)) = misplaced {
            return fail(format!(
                "request {} is {:?} but placed as {status:?}",
                r.id, r.status
            ));
        }
        if self.is_idle() && (acc.protected != 0 || acc.available + acc.evictable != acc.capacity) {
            return fail(format!("idle but {acc:?}"));
        }
        Ok(acc)
    }

    /// Runs one forward: a prefill batch if one can be formed, else a decode step. Returns `None`
    /// when there was nothing to do.
    ///
    /// An error means the KV bookkeeping is broken (a KV operation failed, or an invariant check
    /// did); the step was still carried out for every request, and its events are available.
    pub fn step<R: ModelRunner + ?Sized>(
        &mut self,
        runner: &mut R,
    ) -> Result<Option<StepReport>, RouterError> {
        self.apply_pending_finishes();
        let report = if let Some(batch) = self.prefill_batch(runner.kv_transfer()) {
            Some(if self.mixes(&batch) {
                self.run_mixed(batch, runner)
            } else {
                self.run_extend(batch, runner)
            })
        } else if !self.running.is_empty() {
            self.run_decode(runner)
        } else {
            None
        };
        if report.is_none() && self.running.is_empty() && self.chunked.is_none() {
            self.refuse_unservable_head();
        }
        if let Some(e) = self.fault.take() {
            return Err(e.into());
        }
        if self.cfg.check_invariants {
            self.check_invariants()?;
        }
        Ok(report)
    }

    /// Records a KV operation that failed. The operations the scheduler performs cannot fail
    /// while the bookkeeping is sound, so this means it is not: the step carries on for every
    /// request, then [`Scheduler::step`] returns the first such error.
    fn kv_fault(&mut self, id: Option<ReqId>, operation: &'static str, error: KvError) {
        tracing::error!(id = ?id, operation, error = %error, "KV operation failed");
        self.fault.get_or_insert(error);
    }
}
