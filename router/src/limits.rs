//! How many tokens one request may hold: the single capacity check shared by the scheduler
//! (at `add_request`) and the engine (before a request is queued, and to size a default
//! `max_tokens`).

use crate::error::RouterError;

/// The token budget of one request: prompt plus output must fit the context length and, with
/// room to spare, the KV pool.
///
/// The pool bound is strict (`capacity - 1`) because the scheduler's admission budget needs
/// strictly more free room than a request's total: a request of exactly the pool's size would be
/// accepted by a naive check and then never admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenLimit {
    /// Longest prompt plus output the model serves.
    pub context_length: usize,
    /// Allocatable KV slots in the pool.
    pub kv_capacity: usize,
}

impl TokenLimit {
    /// The most tokens (prompt plus output) a request may hold.
    pub fn max_total(&self) -> usize {
        self.context_length.min(self.kv_capacity.saturating_sub(1))
    }

    /// How many output tokens a prompt of `prompt_len` tokens leaves room for.
    pub fn room_after(&self, prompt_len: usize) -> usize {
        self.max_total().saturating_sub(prompt_len)
    }

    /// Refuses a request whose prompt plus `max_new_tokens` does not fit.
    pub fn check(&self, prompt_len: usize, max_new_tokens: usize) -> Result<(), RouterError> {
        let need = prompt_len.saturating_add(max_new_tokens);
        if need <= self.max_total() {
            return Ok(());
        }
        let what = if need > self.context_length {
            format!("the context length ({})", self.context_length)
        } else {
            format!(
                "the KV pool ({} tokens, of which a request may use {})",
                self.kv_capacity,
                self.max_total()
            )
        };
        let asked = if max_new_tokens == 0 {
            String::new()
        } else {
            format!(" plus max_tokens ({max_new_tokens})")
        };
        Err(RouterError::TooLong {
            message: format!("the prompt ({prompt_len} tokens){asked} exceeds {what}"),
            prompt_tokens: prompt_len,
            limit: self.max_total(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_bound_is_strict_and_the_context_bound_inclusive() {
        let by_pool = TokenLimit {
            context_length: 100,
            kv_capacity: 50,
        };
        assert_eq!(by_pool.max_total(), 49);
        assert!(by_pool.check(40, 9).is_ok());
        let err = by_pool
            .check(40, 10)
            .expect_err("50 tokens do not fit a 50-slot pool");
        assert!(err.to_string().contains("KV pool"), "{err}");
        assert_eq!(by_pool.room_after(40), 9);
        assert_eq!(by_pool.room_after(60), 0);

        let by_context = TokenLimit {
            context_length: 20,
            kv_capacity: 1000,
        };
        assert_eq!(by_context.max_total(), 20);
        assert!(by_context.check(10, 10).is_ok());
        let err = by_context.check(10, 11).expect_err("over the context");
        assert!(err.to_string().contains("context length (20)"), "{err}");
        assert!(by_context.check(usize::MAX, 1).is_err());
    }
}
