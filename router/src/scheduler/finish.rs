//! Ending requests that hold KV: pending finishes (aborts and early finishes asked for between
//! steps), and the release of an admitted request's KV into the cache.

use super::{Admitted, Scheduler, ROW_IN_USE};
use crate::request::FinishReason;

impl Scheduler {
    /// Ends the running (and mid-prefill) requests whose finish was asked for since the last
    /// step; their computed KV is cached, as SGLang does for an abort.
    pub(super) fn apply_pending_finishes(&mut self) {
        let mut i = 0;
        while i < self.running.len() {
            if let Some(reason) = self.running[i].req.pending_finish.take() {
                let a = self.running.swap_remove(i);
                self.finish_admitted(a, reason, true);
            } else {
                i += 1;
            }
        }
        if let Some(mut a) = self.chunked.take() {
            match a.req.pending_finish.take() {
                Some(reason) => self.finish_admitted(a, reason, true),
                None => self.chunked = Some(a),
            }
        }
    }

    /// Finishes an admitted request: caches its computed tokens (or, when its KV is not to be
    /// trusted, frees it without caching) and reports it.
    pub(super) fn finish_admitted(&mut self, a: Admitted, reason: FinishReason, keep_kv: bool) {
        let Admitted { req, row } = a;
        let released = if keep_kv {
            let kv_len = self.kv.row_info(row).expect(ROW_IN_USE).kv_len;
            let tokens = req.all_tokens();
            self.kv.cache_finished(row, &tokens[..kv_len])
        } else {
            self.kv.release(row)
        };
        if let Err(e) = released {
            self.kv_fault(Some(req.id), "releasing a finished request", e);
        }
        self.complete(req, reason);
    }

    /// Nothing runs and nothing could be admitted although the whole pool was free: the head of
    /// the queue can never fit. Refuses it rather than wait forever.
    pub(super) fn refuse_unservable_head(&mut self) {
        if self.waiting.is_empty() {
            return;
        }
        let req = self.waiting.remove(0);
        self.complete(
            *req,
            FinishReason::Abort {
                message: "the request does not fit in the KV pool".into(),
            },
        );
    }
}
