//! `lof`: longest output first.

use super::{select_head, OrderCtx, OrderPolicy};
use crate::request::Req;
use std::cmp::Reverse;

/// Orders by descending `max_new_tokens`, earlier arrivals first among equals.
#[derive(Debug)]
pub(super) struct Lof;

impl OrderPolicy for Lof {
    fn order(&mut self, ctx: OrderCtx<'_>, waiting: &mut [Box<Req>]) {
        select_head(waiting, ctx.window, |r| {
            (Reverse(r.stop.max_new_tokens), r.arrival)
        });
    }
}
