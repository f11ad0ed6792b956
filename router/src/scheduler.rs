//! The scheduler: one forward per `step`, prefill first, else decode.

use crate::adder::{AddResult, Plan, PrefillAdder};
use crate::batch::{ForwardBatch, ForwardMode, ModelError, ModelRunner, SequenceInput, StepOutput};
use crate::error::RouterError;
use crate::limits::TokenLimit;
use crate::policy::Policy;
use crate::request::{FinishReason, Req, ReqId, ReqStatus};
use page_manager::{Accounting, KvCacheManager, KvError, ManagerConfig};
use radix_tree::{EvictionPolicy, KeyRef, NodeId, RadixCache, Token};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::collections::{HashMap, HashSet};

/// Scheduler settings; names follow SGLang's server arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerConfig {
    /// Tokens per KV page (`--page-size`).
    pub page_size: usize,
    /// Allocatable KV pages (the pool size; see `page_manager::KvCapacity`).
    pub num_pages: usize,
    /// Longest prompt plus output (`--context-length`).
    pub context_length: usize,
    /// Most requests decoding at once (`--max-running-requests`).
    pub max_running_requests: usize,
    /// Most prompt tokens in one prefill batch; the first request may exceed it (`--max-prefill-tokens`).
    pub max_prefill_tokens: usize,
    /// Split prompts into chunks of at most this many tokens (`--chunked-prefill-size`); `None` disables.
    pub chunked_prefill_size: Option<usize>,
    /// Waiting-queue order (`--schedule-policy`).
    pub policy: Policy,
    /// Which cached prefixes go first under memory pressure (`--radix-eviction-policy`).
    pub eviction: EvictionPolicy,
    /// Turn prefix caching off (`--disable-radix-cache`).
    pub disable_radix_cache: bool,
    /// End-of-sequence token ids of the model.
    pub eos_token_ids: Vec<Token>,
    /// Scales the initial decode-reservation ratio (`--schedule-conservativeness`).
    pub schedule_conservativeness: f64,
    /// Cap on one request's `max_new_tokens` when reserving decode memory.
    pub clip_max_new_tokens: usize,
    /// Steps of decode room to make for survivors after a retraction.
    pub retract_decode_steps: usize,
    /// In-batch prefix caching: requests with at most this many cached tokens are checked against
    /// the other waiting requests (`None` disables).
    pub in_batch_prefix_check: Option<usize>,
    /// In-batch prefix caching: a shared uncached prefix this long defers a request a round.
    pub in_batch_prefix_deprioritize: usize,
    /// Aging bound for cache-aware policies: a request passed over this many prefill rounds is
    /// considered before all others (first come, first served among such requests).
    pub max_wait_rounds: u32,
    /// Cache-aware policies re-match at most this many waiting requests per round (new ones
    /// first, then the longest unrefreshed); the rest keep their last match as their sort key.
    pub rematch_per_round: usize,
    /// Waiting requests ordered per round (the rest wait their turn); keeps ordering affordable
    /// with very long queues.
    pub order_window: usize,
    /// Seed of the `random` policy.
    pub seed: u64,
    /// Check the full KV accounting after every step (on by default in debug builds).
    pub check_invariants: bool,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            page_size: 1,
            num_pages: 16_384,
            context_length: 8_192,
            max_running_requests: 64,
            max_prefill_tokens: 16_384,
            chunked_prefill_size: Some(2_048),
            policy: Policy::Fcfs,
            eviction: EvictionPolicy::Lru,
            disable_radix_cache: false,
            eos_token_ids: Vec::new(),
            schedule_conservativeness: 1.0,
            clip_max_new_tokens: 4_096,
            retract_decode_steps: 20,
            in_batch_prefix_check: Some(32),
            in_batch_prefix_deprioritize: 32,
            max_wait_rounds: 32,
            rematch_per_round: 256,
            order_window: 1_024,
            seed: 0,
            check_invariants: cfg!(debug_assertions),
        }
    }
}

/// What a request saw in one step, in the order it happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A token was generated.
    Token {
        /// The request.
        id: ReqId,
        /// The token.
        token: Token,
        /// Its log-probability, when requested.
        logprob: Option<f32>,
    },
    /// The request finished; all it held is released.
    Finished {
        /// The request.
        id: ReqId,
        /// Why.
        reason: FinishReason,
        /// Prompt length.
        prompt_tokens: usize,
        /// Tokens generated.
        completion_tokens: usize,
        /// Prompt tokens served from the cache.
        cached_tokens: usize,
    },
}

/// What one step did.
#[derive(Debug, Clone, PartialEq)]
pub struct StepReport {
    /// The forward mode.
    pub mode: ForwardMode,
    /// Sequences in the batch.
    pub batch_size: usize,
    /// Tokens computed.
    pub tokens_computed: usize,
    /// Prompt tokens taken from the cache by requests admitted this step.
    pub tokens_cached: usize,
    /// Requests retracted before this step.
    pub retracted: usize,
    /// The model error, if the step failed (its requests were aborted).
    pub error: Option<String>,
}

/// Monotonic counters (what `/metrics` reports).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Requests accepted.
    pub requests: u64,
    /// Requests finished (any reason).
    pub finished: u64,
    /// Requests aborted.
    pub aborted: u64,
    /// Prefix-cache queries at admission, in prompt tokens.
    pub prefix_query_tokens: u64,
    /// Prefix-cache hits at admission, in tokens.
    pub prefix_hit_tokens: u64,
    /// Tokens computed by the model.
    pub tokens_computed: u64,
    /// Prompt tokens skipped thanks to the cache.
    pub tokens_skipped: u64,
    /// Tokens generated.
    pub tokens_generated: u64,
    /// Prefill (extend) steps.
    pub prefill_steps: u64,
    /// Decode steps.
    pub decode_steps: u64,
    /// Sequences summed over prefill steps.
    pub prefill_batch_seqs: u64,
    /// Sequences summed over decode steps.
    pub decode_batch_seqs: u64,
    /// Retractions.
    pub retractions: u64,
    /// Failed model steps.
    pub model_errors: u64,
}

/// Sort key of running requests before a retraction: the request retracted first sorts last
/// (fewest generated tokens; among equals the longest prompt, then the latest arrival).
fn retraction_key(output_len: usize, prompt_len: usize, arrival: u64) -> impl Ord {
    (std::cmp::Reverse(output_len), prompt_len, arrival)
}

/// The order in which running requests `(generated, prompt_len)` would be retracted.
pub fn retraction_order(reqs: &[(usize, usize)]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..reqs.len()).collect();
    idx.sort_by_key(|&i| retraction_key(reqs[i].0, reqs[i].1, i as u64));
    idx.reverse();
    idx
}

/// SGLang's decode-reservation ratio after a retraction:
/// `min(1, (decoded + steps * survivors) / (sum of max_new_tokens + 1))`.
pub fn retract_ratio(decoded: usize, survivors: usize, steps: usize, max_new_sum: usize) -> f64 {
    ((decoded + steps * survivors) as f64 / (max_new_sum + 1) as f64).min(1.0)
}

/// SGLang's scheduler over a [`KvCacheManager`].
#[derive(Debug)]
pub struct Scheduler {
    cfg: SchedulerConfig,
    policy: Policy,
    kv: KvCacheManager,
    /// Boxed so that reordering a long queue moves pointers, not requests (measured: moving
    /// whole requests dominated the step time with 10,000 waiting).
    #[allow(clippy::vec_box)]
    waiting: Vec<Box<Req>>,
    running: Vec<Req>,
    chunked: Option<Req>,
    ids: HashSet<ReqId>,
    events: Vec<Event>,
    counters: Counters,
    min_ratio: f64,
    ratio_decay: f64,
    new_token_ratio: f64,
    arrivals: u64,
    round: u64,
    refresh_cursor: usize,
    rng: StdRng,
}

impl Scheduler {
    /// A scheduler with an empty queue and an empty cache.
    pub fn new(cfg: SchedulerConfig) -> Result<Self, RouterError> {
        if cfg.max_running_requests == 0 {
            return Err(RouterError::Config(
                "max_running_requests must be positive".into(),
            ));
        }
        if cfg
            .chunked_prefill_size
            .is_some_and(|c| c < cfg.page_size.max(1))
        {
            return Err(RouterError::Config(format!(
                "chunked_prefill_size must be at least the page size ({})",
                cfg.page_size
            )));
        }
        if cfg.max_prefill_tokens == 0 {
            return Err(RouterError::Config(
                "max_prefill_tokens must be positive".into(),
            ));
        }
        let kv = KvCacheManager::new(&ManagerConfig {
            page_size: cfg.page_size,
            num_pages: cfg.num_pages,
            max_rows: cfg.max_running_requests + 1,
            max_context: cfg.context_length,
            disable_radix_cache: cfg.disable_radix_cache,
            eviction: cfg.eviction,
        })?;
        // SGLang: a cache-aware policy becomes FCFS when the cache is disabled.
        let policy = if cfg.disable_radix_cache && cfg.policy.is_cache_aware() {
            Policy::Fcfs
        } else {
            cfg.policy
        };
        let init_ratio = (0.7 * cfg.schedule_conservativeness).min(1.0);
        let min_ratio = init_ratio * 0.14;
        Ok(Scheduler {
            policy,
            kv,
            waiting: Vec::new(),
            running: Vec::new(),
            chunked: None,
            ids: HashSet::new(),
            events: Vec::new(),
            counters: Counters::default(),
            min_ratio,
            ratio_decay: (init_ratio - min_ratio) / 600.0,
            new_token_ratio: init_ratio,
            arrivals: 0,
            round: 0,
            refresh_cursor: 0,
            rng: StdRng::seed_from_u64(cfg.seed),
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
        self.new_token_ratio
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
        if req.prompt.is_empty() {
            return Err(RouterError::InvalidRequest("the prompt is empty".into()));
        }
        self.token_limit()
            .check(req.prompt.len(), req.stop.max_new_tokens)?;
        if req.stop.min_new_tokens > req.stop.max_new_tokens {
            return Err(RouterError::InvalidRequest(
                "min_new_tokens exceeds max_new_tokens".into(),
            ));
        }
        req.sampling
            .validate()
            .map_err(RouterError::InvalidRequest)?;
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
            let mut req = *self.waiting.remove(pos);
            if let Some(row) = req.row.take() {
                // Cannot happen (waiting requests hold no row) but never leak one.
                let _ = self.kv.release(row);
            }
            self.complete(req, reason);
            return true;
        }
        let target = self
            .running
            .iter_mut()
            .chain(self.chunked.iter_mut())
            .find(|r| r.id == id);
        match target {
            Some(req) => {
                req.pending_finish.get_or_insert(reason);
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

    /// Checks the KV accounting (every slot in exactly one place) and the request rows.
    pub fn check_invariants(&self) -> Result<Accounting, RouterError> {
        let acc = self.kv.check_accounting()?;
        let rows = self
            .running
            .iter()
            .chain(self.chunked.iter())
            .filter(|r| r.row.is_some())
            .count();
        if rows != acc.active_rows || self.waiting.iter().any(|r| r.row.is_some()) {
            return Err(RouterError::Kv(KvError::Accounting(format!(
                "{rows} admitted requests but {} rows in use",
                acc.active_rows
            ))));
        }
        if self.is_idle() && (acc.protected != 0 || acc.available + acc.evictable != acc.capacity) {
            return Err(RouterError::Kv(KvError::Accounting(format!(
                "idle but {acc:?}"
            ))));
        }
        Ok(acc)
    }

    fn complete(&mut self, mut req: Req, reason: FinishReason) {
        if matches!(reason, FinishReason::Abort { .. }) {
            self.counters.aborted += 1;
        }
        self.counters.finished += 1;
        self.ids.remove(&req.id);
        req.status = ReqStatus::Finished;
        self.events.push(Event::Finished {
            id: req.id,
            reason: reason.clone(),
            prompt_tokens: req.prompt.len(),
            completion_tokens: req.output.len(),
            cached_tokens: req.cached_tokens,
        });
        req.finish = Some(reason);
    }

    /// Finishes an admitted request: caches its computed tokens (or, when its KV is not to be
    /// trusted, frees it without caching) and reports it.
    fn finish_admitted(&mut self, mut req: Req, reason: FinishReason, keep_kv: bool) {
        if let Some(row) = req.row.take() {
            let result = match self.kv.row_info(row) {
                Ok(info) if keep_kv => {
                    let kv_len = info.kv_len;
                    let tokens = req.all_tokens();
                    self.kv.cache_finished(row, &tokens[..kv_len])
                }
                _ => self.kv.release(row),
            };
            if let Err(e) = result {
                tracing::error!(id = req.id, error = %e, "releasing a finished request failed");
            }
        }
        self.complete(req, reason);
    }

    /// Runs one forward: a prefill batch if one can be formed, else a decode step. Returns `None`
    /// when there was nothing to do.
    pub fn step<R: ModelRunner + ?Sized>(
        &mut self,
        runner: &mut R,
    ) -> Result<Option<StepReport>, RouterError> {
        self.apply_pending_finishes();
        let report = if let Some(batch) = self.prefill_batch() {
            Some(self.run_extend(batch, runner))
        } else if !self.running.is_empty() {
            self.run_decode(runner)
        } else {
            None
        };
        if report.is_none() && self.running.is_empty() && self.chunked.is_none() {
            // Nothing runs and nothing could be admitted: the head of the queue can never fit
            // (the whole pool was free). Refuse it rather than wait forever.
            if let Some(req) = (!self.waiting.is_empty()).then(|| self.waiting.remove(0)) {
                self.complete(
                    *req,
                    FinishReason::Abort {
                        message: "the request does not fit in the KV pool".into(),
                    },
                );
            }
        }
        if self.cfg.check_invariants {
            self.check_invariants()?;
        }
        Ok(report)
    }

    fn apply_pending_finishes(&mut self) {
        let mut i = 0;
        while i < self.running.len() {
            if let Some(reason) = self.running[i].pending_finish.take() {
                let req = self.running.swap_remove(i);
                self.finish_admitted(req, reason, true);
            } else {
                i += 1;
            }
        }
        if self
            .chunked
            .as_ref()
            .is_some_and(|r| r.pending_finish.is_some())
        {
            if let Some(mut req) = self.chunked.take() {
                let reason = req.pending_finish.take().unwrap_or(FinishReason::Abort {
                    message: "aborted".into(),
                });
                self.finish_admitted(req, reason, true);
            }
        }
    }

    // ----- ordering -----

    fn order_waiting(&mut self) {
        let n = self.waiting.len();
        if n <= 1 {
            return;
        }
        // Only the head of the queue can be admitted this round: order that much.
        let free = self
            .cfg
            .max_running_requests
            .saturating_sub(self.running.len());
        let window = self.cfg.order_window.min(4 * free + 64).max(1).min(n);
        match self.policy {
            // Queue order: arrivals in order, retracted requests behind them (as SGLang).
            Policy::Fcfs => {}
            Policy::Lof => {
                let key = |r: &Req| (std::cmp::Reverse(r.stop.max_new_tokens), r.arrival);
                Self::select_head(&mut self.waiting, window, key);
            }
            Policy::Random => {
                self.waiting.shuffle(&mut self.rng);
            }
            Policy::Lpm => {
                self.refresh_matches();
                let max_wait = self.cfg.max_wait_rounds;
                let key = |r: &Req| {
                    let overdue = r.waited_rounds >= max_wait;
                    (
                        !overdue,
                        if overdue { 0 } else { usize::MAX - r.lpm_key },
                        r.arrival,
                    )
                };
                Self::select_head(&mut self.waiting, window, key);
                self.in_batch_dedup(window);
            }
            Policy::DfsWeight => {
                self.refresh_matches();
                self.order_dfs_weight();
                self.in_batch_dedup(window);
            }
        }
    }

    /// Puts the `window` smallest keys first, sorted; the rest keep no particular order.
    fn select_head<K: Ord>(reqs: &mut [Box<Req>], window: usize, key: impl Fn(&Req) -> K) {
        if window < reqs.len() {
            reqs.select_nth_unstable_by(window - 1, |a, b| key(a).cmp(&key(b)));
        }
        reqs[..window].sort_by_key(|r| key(r));
    }

    /// Re-matches up to `rematch_per_round` waiting requests against the tree: never-matched
    /// ones first, then round-robin through the queue, so every key is refreshed within
    /// `len / rematch_per_round` rounds.
    fn refresh_matches(&mut self) {
        self.round += 1;
        let n = self.waiting.len();
        let budget = self.cfg.rematch_per_round.min(n);
        let mut done = 0;
        for i in 0..n {
            if done >= budget {
                break;
            }
            if self.waiting[i].lpm_round == 0 {
                self.rematch(i);
                done += 1;
            }
        }
        let mut scanned = 0;
        while done < budget && scanned < n {
            let i = self.refresh_cursor % n;
            self.refresh_cursor = self.refresh_cursor.wrapping_add(1);
            scanned += 1;
            if self.waiting[i].lpm_round != self.round {
                self.rematch(i);
                done += 1;
            }
        }
    }

    fn rematch(&mut self, i: usize) {
        let req = &self.waiting[i];
        let hit = if req.output.is_empty() {
            self.kv.match_prefix(&req.namespace, &req.prompt)
        } else {
            let tokens = req.all_tokens();
            self.kv.match_prefix(&req.namespace, &tokens)
        };
        let req = &mut self.waiting[i];
        req.lpm_key = hit.len;
        req.lpm_node = Some(hit.last_node);
        req.lpm_round = self.round;
    }

    /// SGLang's in-batch prefix caching over the ordered head: of several waiting requests that
    /// share an uncached prefix, only the first runs this round; the others (moved behind the
    /// head) will hit the cache next round.
    fn in_batch_dedup(&mut self, window: usize) {
        let Some(check) = self.cfg.in_batch_prefix_check else {
            return;
        };
        let threshold = self.cfg.in_batch_prefix_deprioritize;
        let mut sim: RadixCache<()> = RadixCache::new(self.kv.page_size());
        let mut deferred = Vec::new();
        let mut kept = Vec::new();
        for (i, req) in self.waiting[..window].iter().enumerate() {
            if req.lpm_key > check {
                kept.push(i);
                continue;
            }
            let tokens = req.all_tokens();
            let key = KeyRef::new(&tokens, &req.namespace);
            if sim.match_prefix(key).len() >= threshold {
                deferred.push(i);
            } else {
                let _ = sim.insert(key, &vec![(); tokens.len()]);
                kept.push(i);
            }
        }
        if deferred.is_empty() {
            return;
        }
        let head: Vec<Box<Req>> = self.waiting.drain(..window).collect();
        let mut slots: Vec<Option<Box<Req>>> = head.into_iter().map(Some).collect();
        let mut reordered: Vec<Box<Req>> = Vec::with_capacity(window);
        for i in kept {
            reordered.extend(slots[i].take());
        }
        let tail: Vec<Box<Req>> = deferred
            .into_iter()
            .filter_map(|i| slots[i].take())
            .collect();
        let rest: Vec<Box<Req>> = self.waiting.drain(..).collect();
        self.waiting = reordered;
        self.waiting.extend(rest);
        self.waiting.extend(tail);
    }

    /// SGLang's DFS-weight order: weight(node) = waiting requests at the node plus its children's
    /// weights; visit children heaviest first, emit a node's own requests after its subtree.
    /// Overdue requests (aging bound) still go first.
    fn order_dfs_weight(&mut self) {
        let tree = self.kv.tree();
        let root = tree.root();
        let mut at_node: HashMap<NodeId, Vec<usize>> = HashMap::new();
        let mut weight: HashMap<NodeId, usize> = HashMap::new();
        let mut overdue: Vec<usize> = Vec::new();
        for (i, r) in self.waiting.iter().enumerate() {
            if r.waited_rounds >= self.cfg.max_wait_rounds {
                overdue.push(i);
                continue;
            }
            let node = r.lpm_node.filter(|&n| tree.contains(n)).unwrap_or(root);
            at_node.entry(node).or_default().push(i);
            let mut cur = Some(node);
            while let Some(n) = cur {
                *weight.entry(n).or_default() += 1;
                cur = tree.parent(n).ok().flatten();
            }
        }
        overdue.sort_by_key(|&i| self.waiting[i].arrival);
        let mut order = overdue;
        // Iterative post-order: (node, expanded?)
        let mut stack = vec![(root, false)];
        while let Some((node, expanded)) = stack.pop() {
            if expanded {
                if let Some(reqs) = at_node.get(&node) {
                    order.extend(reqs.iter().copied());
                }
                continue;
            }
            stack.push((node, true));
            let mut kids: Vec<(usize, NodeId)> = tree
                .children(node)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|c| weight.get(&c).map(|&w| (w, c)))
                .collect();
            // Heaviest first: pushed last so it pops first.
            kids.sort_by_key(|&(w, c)| (w, std::cmp::Reverse(c)));
            stack.extend(kids.into_iter().map(|(_, c)| (c, false)));
        }
        let mut slots: Vec<Option<Box<Req>>> = self.waiting.drain(..).map(Some).collect();
        for i in order {
            if let Some(r) = slots[i].take() {
                self.waiting.push(r);
            }
        }
    }

    // ----- prefill -----

    fn max_new_reserved(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.running
            .iter()
            .map(|r| (r.stop.max_new_tokens, r.output.len()))
    }

    /// Forms the next prefill batch (SGLang's `get_new_batch_prefill`): the chunked request's next
    /// chunk first, then waiting requests in policy order while the budgets allow. Returns the
    /// admitted requests with the number of tokens each computes now.
    fn prefill_batch(&mut self) -> Option<Vec<(Req, usize)>> {
        if self.waiting.is_empty() && self.chunked.is_none() {
            return None;
        }
        let cap = self.cfg.max_running_requests;
        let mut adder = PrefillAdder::new(
            self.kv.page_size(),
            self.new_token_ratio,
            self.cfg.clip_max_new_tokens,
            self.max_new_reserved().collect::<Vec<_>>(),
            self.cfg.max_prefill_tokens,
            self.cfg.chunked_prefill_size,
        );
        let mut batch: Vec<(Req, usize)> = Vec::new();
        if let Some(req) = self.chunked.take() {
            let kv_len = req
                .row
                .and_then(|r| self.kv.row_info(r).ok())
                .map_or(0, |i| i.kv_len);
            let left = req.len() - kv_len;
            let n = adder.add_chunked(left, req.max_new_left(), self.kv.allocatable_size());
            if n == 0 {
                self.chunked = Some(req);
                return None;
            }
            batch.push((req, n));
        }
        if self.running.len() + batch.len() < cap && !self.waiting.is_empty() {
            self.order_waiting();
            let mut admitted: Vec<usize> = Vec::new();
            for i in 0..self.waiting.len() {
                if self.running.len() + batch.len() + admitted.len() >= cap {
                    break;
                }
                match self.try_admit(i, &mut adder) {
                    Some((n, result)) => {
                        self.waiting[i].pending_extend = n;
                        admitted.push(i);
                        if result != AddResult::Continue {
                            break;
                        }
                    }
                    None => break,
                }
            }
            // Move admitted requests out of the queue, keeping the queue's order.
            // Admitted requests are all in the ordered head: take them out in admission order.
            let head = admitted.last().map_or(0, |&i| i + 1);
            let mut taken: Vec<Option<Box<Req>>> = self.waiting.drain(..head).map(Some).collect();
            for &i in &admitted {
                if let Some(req) = taken[i].take() {
                    let n = req.pending_extend;
                    batch.push((*req, n));
                }
            }
            let rest: Vec<Box<Req>> = taken.into_iter().flatten().collect();
            self.waiting.splice(0..0, rest);
            for r in &mut self.waiting {
                r.waited_rounds = r.waited_rounds.saturating_add(1);
            }
        }
        (!batch.is_empty()).then_some(batch)
    }

    /// Tries to admit waiting request `i`: match (L-1 rule), lock, budget. Returns the tokens to
    /// compute now and the budget state, or `None` when it does not fit (nothing is held then).
    fn try_admit(&mut self, i: usize, adder: &mut PrefillAdder) -> Option<(usize, AddResult)> {
        let tokens = self.waiting[i].all_tokens();
        let req = &self.waiting[i];
        let hit = self
            .kv
            .match_request_prefix(&req.namespace, &tokens, req.logprob_start);
        let extend = tokens.len() - hit.len;
        let max_new_left = req.max_new_left();
        if adder
            .precheck(extend, max_new_left, self.kv.allocatable_size())
            .is_some()
        {
            return None;
        }
        if self.kv.free_rows() == 0 {
            return None;
        }
        let row = match self.kv.admit(req.namespace.clone(), hit) {
            Ok(row) => row,
            Err(e) => {
                tracing::warn!(error = %e, "admission failed");
                return None;
            }
        };
        let n = match adder.plan(extend, max_new_left, self.kv.allocatable_size()) {
            Plan::Whole => extend,
            Plan::Chunk(n) => n,
            Plan::Reject(_) => {
                let _ = self.kv.release(row);
                return None;
            }
        };
        let req = &mut self.waiting[i];
        req.row = Some(row);
        req.hit = Some(hit);
        self.counters.prefix_query_tokens += tokens.len() as u64;
        self.counters.prefix_hit_tokens += hit.len as u64;
        self.counters.tokens_skipped += hit.len as u64;
        if !req.retracted {
            req.cached_tokens += hit.len.saturating_sub(req.already_computed);
            req.already_computed = hit.len + n;
        }
        Some((n, adder.budget_state(self.kv.allocatable_size())))
    }

    fn run_extend<R: ModelRunner + ?Sized>(
        &mut self,
        batch: Vec<(Req, usize)>,
        runner: &mut R,
    ) -> StepReport {
        let mut reqs: Vec<Req> = Vec::with_capacity(batch.len());
        let mut seqs: Vec<SequenceInput> = Vec::with_capacity(batch.len());
        let mut cached = 0;
        for (mut req, n) in batch {
            let Some(row) = req.row else {
                self.waiting.push(Box::new(req));
                continue;
            };
            let kv_len = self.kv.row_info(row).map_or(0, |i| i.kv_len);
            match self.kv.alloc_extend(row, n) {
                Ok(slots) => {
                    if req.status == ReqStatus::Waiting {
                        cached += req.hit.map_or(0, |h| h.len);
                    }
                    let tokens = req.all_tokens();
                    let done = kv_len + n == tokens.len();
                    req.status = if done {
                        ReqStatus::Decoding
                    } else {
                        ReqStatus::Prefilling
                    };
                    let slot_row = self
                        .kv
                        .row_slots(row)
                        .map(<[_]>::to_vec)
                        .unwrap_or_default();
                    seqs.push(SequenceInput {
                        token_ids: tokens[kv_len..kv_len + n].to_vec(),
                        positions: (kv_len..kv_len + n).collect(),
                        slot_row,
                        out_slots: slots,
                        sample: done,
                        sampling: req.sampling.clone(),
                        output_ids: req.output.clone(),
                        prompt_ids: req.prompt.clone(),
                    });
                    reqs.push(req);
                }
                Err(e) => {
                    // The budget should prevent this; give the request back to the queue.
                    tracing::warn!(id = req.id, error = %e, "prefill allocation failed; re-queued");
                    let _ = self.kv.release(row);
                    req.row = None;
                    req.hit = None;
                    req.status = ReqStatus::Waiting;
                    self.waiting.push(Box::new(req));
                }
            }
        }
        let fb = ForwardBatch {
            mode: ForwardMode::Extend,
            seqs,
        };
        let tokens_computed = fb.num_tokens();
        let mut report = StepReport {
            mode: ForwardMode::Extend,
            batch_size: reqs.len(),
            tokens_computed,
            tokens_cached: cached,
            retracted: 0,
            error: None,
        };
        if reqs.is_empty() {
            return report;
        }
        self.counters.prefill_steps += 1;
        self.counters.prefill_batch_seqs += reqs.len() as u64;
        self.counters.tokens_computed += tokens_computed as u64;
        let output = match Self::call(runner, &fb) {
            Ok(out) => out,
            Err(e) => {
                report.error = Some(e.to_string());
                self.fail_batch(reqs, &e);
                return report;
            }
        };
        for ((mut req, seq), sampled) in reqs.into_iter().zip(&fb.seqs).zip(output.tokens) {
            let Some(row) = req.row else { continue };
            let kv_len = seq.seq_len();
            if !seq.sample {
                let tokens = req.all_tokens();
                if let Err(e) = self.kv.cache_unfinished(row, &tokens[..kv_len]) {
                    tracing::error!(id = req.id, error = %e, "caching a chunk failed");
                }
                self.chunked = Some(req);
                continue;
            }
            if req.stop.max_new_tokens == 0 || req.output.len() >= req.stop.max_new_tokens {
                let length = req.stop.max_new_tokens;
                self.finish_admitted(req, FinishReason::Length { length }, true);
                continue;
            }
            if let Some(s) = sampled {
                self.push_token(&mut req, s.token, s.logprob);
            }
            if let Some(reason) = req.check_finished(&self.cfg.eos_token_ids) {
                self.finish_admitted(req, reason, true);
            } else {
                let tokens = req.all_tokens();
                if let Err(e) = self.kv.cache_unfinished(row, &tokens[..kv_len]) {
                    tracing::error!(id = req.id, error = %e, "caching a prompt failed");
                }
                req.status = ReqStatus::Decoding;
                self.running.push(req);
            }
        }
        report
    }

    fn push_token(&mut self, req: &mut Req, token: Token, logprob: Option<f32>) {
        req.output.push(token);
        if let Some(lp) = logprob {
            req.output_logprobs.push(lp);
        }
        self.counters.tokens_generated += 1;
        self.events.push(Event::Token {
            id: req.id,
            token,
            logprob,
        });
    }

    /// Calls the runner and checks that it answered every sequence that asked for a token.
    fn call<R: ModelRunner + ?Sized>(
        runner: &mut R,
        fb: &ForwardBatch,
    ) -> Result<StepOutput, ModelError> {
        let out = runner.forward(fb)?;
        if out.tokens.len() != fb.seqs.len() {
            return Err(ModelError(format!(
                "runner returned {} results for {} sequences",
                out.tokens.len(),
                fb.seqs.len()
            )));
        }
        if fb
            .seqs
            .iter()
            .zip(&out.tokens)
            .any(|(s, t)| s.sample && t.is_none())
        {
            return Err(ModelError(
                "runner returned no token for a sampled sequence".into(),
            ));
        }
        Ok(out)
    }

    /// A failed forward: its requests end with an abort and their KV is freed, not cached.
    fn fail_batch(&mut self, reqs: Vec<Req>, e: &ModelError) {
        tracing::error!(error = %e, "forward failed; aborting its requests");
        self.counters.model_errors += 1;
        for req in reqs {
            self.finish_admitted(
                req,
                FinishReason::Abort {
                    message: e.to_string(),
                },
                false,
            );
        }
    }

    // ----- decode -----

    /// Pages the running batch needs for one more token each.
    fn decode_pages_needed(&self) -> usize {
        self.running
            .iter()
            .filter_map(|r| r.row)
            .map(|row| self.kv.pages_needed(row, 1).unwrap_or(1))
            .sum()
    }

    /// SGLang's `update_running_batch`: make room for one token per running request, retracting
    /// requests (fewest outputs first, longest prompt breaking ties, never the last one) when even
    /// eviction cannot.
    fn ensure_decode_memory(&mut self) -> usize {
        let p = self.kv.page_size();
        let fits = |s: &Self| s.decode_pages_needed() * p <= s.kv.allocatable_size();
        if fits(self) {
            self.new_token_ratio = (self.new_token_ratio - self.ratio_decay).max(self.min_ratio);
            return 0;
        }
        // Sort so that the request to retract first is last.
        self.running
            .sort_by_key(|r| retraction_key(r.output.len(), r.prompt.len(), r.arrival));
        let mut retracted = 0;
        while !fits(self) && self.running.len() > 1 {
            let Some(mut req) = self.running.pop() else {
                break;
            };
            if let Some(row) = req.row.take() {
                if let Err(e) = self.kv.release(row) {
                    tracing::error!(id = req.id, error = %e, "retraction release failed");
                }
            }
            req.reset_for_retract();
            self.counters.retractions += 1;
            retracted += 1;
            self.waiting.push(Box::new(req));
        }
        if !fits(self) {
            // Even one request cannot grow: it cannot be served with this pool.
            if let Some(req) = self.running.pop() {
                self.finish_admitted(
                    req,
                    FinishReason::Abort {
                        message: "out of KV memory: the request does not fit in the pool".into(),
                    },
                    true,
                );
            }
        }
        // Make room for the survivors to run a while.
        let room = self.running.len() * self.cfg.retract_decode_steps;
        if self.kv.available_size() < room {
            let _ = self.kv.evict(room - self.kv.available_size());
        }
        let decoded: usize = self.running.iter().map(|r| r.output.len()).sum();
        let max_new: usize = self.running.iter().map(|r| r.stop.max_new_tokens).sum();
        self.new_token_ratio = retract_ratio(
            decoded,
            self.running.len(),
            self.cfg.retract_decode_steps,
            max_new,
        );
        retracted
    }

    fn run_decode<R: ModelRunner + ?Sized>(&mut self, runner: &mut R) -> Option<StepReport> {
        let retracted = self.ensure_decode_memory();
        if self.running.is_empty() {
            return None;
        }
        let mut seqs = Vec::with_capacity(self.running.len());
        let mut i = 0;
        while i < self.running.len() {
            let req = &self.running[i];
            let allocated = req
                .row
                .ok_or(KvError::Accounting("running request without a row".into()))
                .and_then(|row| {
                    let slot = self.kv.alloc_decode(row)?;
                    Ok((slot, self.kv.row_slots(row)?.to_vec()))
                });
            match allocated {
                Ok((slot, slot_row)) => {
                    let pos = slot_row.len() - 1;
                    let last = req
                        .output
                        .last()
                        .or(req.prompt.last())
                        .copied()
                        .unwrap_or(0);
                    seqs.push(SequenceInput {
                        token_ids: vec![last],
                        positions: vec![pos],
                        slot_row,
                        out_slots: vec![slot],
                        sample: true,
                        sampling: req.sampling.clone(),
                        output_ids: req.output.clone(),
                        prompt_ids: req.prompt.clone(),
                    });
                    i += 1;
                }
                Err(e) => {
                    let req = self.running.swap_remove(i);
                    self.finish_admitted(
                        req,
                        FinishReason::Abort {
                            message: e.to_string(),
                        },
                        true,
                    );
                }
            }
        }
        let fb = ForwardBatch {
            mode: ForwardMode::Decode,
            seqs,
        };
        let mut report = StepReport {
            mode: ForwardMode::Decode,
            batch_size: fb.seqs.len(),
            tokens_computed: fb.seqs.len(),
            tokens_cached: 0,
            retracted,
            error: None,
        };
        self.counters.decode_steps += 1;
        self.counters.decode_batch_seqs += fb.seqs.len() as u64;
        self.counters.tokens_computed += fb.seqs.len() as u64;
        let output = match Self::call(runner, &fb) {
            Ok(out) => out,
            Err(e) => {
                report.error = Some(e.to_string());
                let reqs: Vec<Req> = self.running.drain(..).collect();
                self.fail_batch(reqs, &e);
                return Some(report);
            }
        };
        self.kv.free_group_begin();
        let running: Vec<Req> = self.running.drain(..).collect();
        for (mut req, sampled) in running.into_iter().zip(output.tokens) {
            if let Some(s) = sampled {
                self.push_token(&mut req, s.token, s.logprob);
            }
            match req.check_finished(&self.cfg.eos_token_ids) {
                Some(reason) => self.finish_admitted(req, reason, true),
                None => self.running.push(req),
            }
        }
        self.kv.free_group_end();
        Some(report)
    }
}
