//! SGLang's `PrefillAdder`: the token budgets that decide which waiting requests join a prefill
//! batch. Pure arithmetic over the allocatable KV (`available + evictable`), so it can be tested
//! on its own; the scheduler takes and releases locks around it.

/// The adder's verdict after a request was considered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddResult {
    /// More requests may join.
    Continue,
    /// KV is exhausted for this round (the batch is full).
    NoToken,
    /// A per-batch limit (prefill tokens, chunk size) is reached.
    Other,
}

/// What to do with one candidate request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Reject it; stop adding with this result.
    Reject(AddResult),
    /// Compute its whole remaining prompt now.
    Whole,
    /// Compute only the first `n` tokens now (a chunk); it continues next round.
    Chunk(usize),
}

/// Budgets of one prefill round.
#[derive(Debug, Clone)]
pub struct PrefillAdder {
    page_size: usize,
    clip_max_new: usize,
    rem_total_offset: f64,
    cur_offset: f64,
    rem_input: i64,
    rem_chunk: Option<i64>,
    admitted: usize,
}

fn ceil_page(n: usize, p: usize) -> usize {
    n.div_ceil(p) * p
}

impl PrefillAdder {
    /// A round's budgets. `running` lists `(max_new_tokens, generated)` of running requests: each
    /// reserves `min(max_new - generated, clip) * new_token_ratio` future tokens.
    pub fn new(
        page_size: usize,
        new_token_ratio: f64,
        clip_max_new: usize,
        running: impl IntoIterator<Item = (usize, usize)>,
        max_prefill_tokens: usize,
        chunked_prefill_size: Option<usize>,
    ) -> Self {
        let reserved: f64 = running
            .into_iter()
            .map(|(max_new, out)| {
                max_new.saturating_sub(out).min(clip_max_new) as f64 * new_token_ratio
            })
            .sum();
        PrefillAdder {
            page_size,
            clip_max_new,
            rem_total_offset: reserved,
            cur_offset: 0.0,
            rem_input: max_prefill_tokens as i64,
            rem_chunk: chunked_prefill_size.map(|c| c as i64),
            admitted: 0,
        }
    }

    /// The same budgets for a MIXED step that also computes `tokens` decode tokens (SGLang's
    /// `mixed_with_decode_tokens`): they count against every budget before any request is
    /// admitted.
    pub fn with_mixed_decode(mut self, tokens: usize) -> Self {
        self.rem_total_offset += tokens as f64;
        self.cur_offset += tokens as f64;
        self.rem_input -= tokens as i64;
        if let Some(c) = &mut self.rem_chunk {
            *c -= tokens as i64;
        }
        self
    }

    /// Future-aware budget: what is left after every admitted and running request's reservation.
    pub fn rem_total_tokens(&self, allocatable: usize) -> f64 {
        allocatable as f64 - self.rem_total_offset
    }

    /// What this prefill itself may still consume.
    pub fn cur_rem_tokens(&self, allocatable: usize) -> f64 {
        allocatable as f64 - self.cur_offset
    }

    /// The reservation offset (for inspection).
    pub fn reserved_tokens(&self) -> f64 {
        self.rem_total_offset
    }

    /// Requests admitted so far.
    pub fn admitted(&self) -> usize {
        self.admitted
    }

    /// SGLang's `budget_state`.
    pub fn budget_state(&self, allocatable: usize) -> AddResult {
        if self.rem_total_tokens(allocatable) <= 0.0 || self.cur_rem_tokens(allocatable) <= 0.0 {
            AddResult::NoToken
        } else if self.rem_input <= 0 || self.rem_chunk.is_some_and(|c| c <= 0) {
            AddResult::Other
        } else {
            AddResult::Continue
        }
    }

    fn charge(&mut self, extend: usize, max_new: usize) {
        let extend = ceil_page(extend, self.page_size);
        self.rem_total_offset += (extend + max_new) as f64;
        self.cur_offset += extend as f64;
        self.rem_input -= extend as i64;
        if let Some(c) = &mut self.rem_chunk {
            *c -= extend as i64;
        }
        self.admitted += 1;
    }

    /// The first check, before the request's prefix is locked: does it fit at all, and does the
    /// batch's prefill-token cap allow it (the first request of a batch may exceed the cap)?
    pub fn precheck(
        &self,
        extend: usize,
        max_new_left: usize,
        allocatable: usize,
    ) -> Option<AddResult> {
        let total = extend + max_new_left.min(self.clip_max_new);
        if total as f64 >= self.rem_total_tokens(allocatable) {
            return Some(AddResult::NoToken);
        }
        if ceil_page(extend, self.page_size) as i64 >= self.rem_input && self.admitted > 0 {
            return Some(AddResult::Other);
        }
        None
    }

    /// Decides for a request whose prefix is now locked (`allocatable` measured after the lock),
    /// and charges its budget when admitted.
    pub fn plan(&mut self, extend: usize, max_new_left: usize, allocatable: usize) -> Plan {
        let total = extend + max_new_left.min(self.clip_max_new);
        if total as f64 >= self.rem_total_tokens(allocatable) {
            return Plan::Reject(AddResult::NoToken);
        }
        let rem_chunk = match self.rem_chunk {
            Some(c) if ceil_page(extend, self.page_size) as i64 > c => c.max(0) as usize,
            // Chunking is off, or the whole rest fits the chunk budget.
            _ => {
                self.charge(extend, max_new_left.min(self.clip_max_new));
                return Plan::Whole;
            }
        };
        let trunc = rem_chunk - rem_chunk % self.page_size;
        if trunc == 0 {
            return Plan::Reject(AddResult::Other);
        }
        self.charge(trunc, 0);
        Plan::Chunk(trunc)
    }

    /// The next chunk of the request that is mid-prefill: at most the chunk budget and what the
    /// pool allows, page-aligned unless it is the last. Reserves its decode tokens only with its
    /// last chunk. Returns 0 when nothing fits this round.
    pub fn add_chunked(
        &mut self,
        extend_left: usize,
        max_new_left: usize,
        allocatable: usize,
    ) -> usize {
        let total_room = self.rem_total_tokens(allocatable).max(0.0) as usize;
        let limit = match self.rem_chunk {
            Some(c) => (c.max(0) as usize).min(total_room),
            None => total_room,
        };
        if extend_left <= limit {
            self.charge(extend_left, max_new_left.min(self.clip_max_new));
            extend_left
        } else {
            let n = limit - limit % self.page_size;
            if n > 0 {
                self.charge(n, 0);
            }
            n
        }
    }
}
