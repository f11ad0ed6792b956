//! `random`: a seeded shuffle of the whole queue.

use super::{OrderCtx, OrderPolicy};
use crate::request::Req;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

/// Shuffles the queue every round, from a generator seeded with `SchedulerConfig::seed` (so a
/// run is reproducible).
#[derive(Debug)]
pub(super) struct RandomOrder {
    rng: StdRng,
}

impl RandomOrder {
    pub(super) fn new(seed: u64) -> Self {
        RandomOrder {
            rng: StdRng::seed_from_u64(seed),
        }
    }
}

impl OrderPolicy for RandomOrder {
    fn order(&mut self, _ctx: OrderCtx<'_>, waiting: &mut [Box<Req>]) {
        waiting.shuffle(&mut self.rng);
    }
}
