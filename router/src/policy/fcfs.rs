//! `fcfs`: first come, first served (SGLang's default).

use super::{OrderCtx, OrderPolicy};
use crate::request::Req;

/// Keeps the queue's own order: arrivals in order, and retracted requests behind the requests
/// that were already waiting when they rejoined (as SGLang).
#[derive(Debug)]
pub(super) struct Fcfs;

impl OrderPolicy for Fcfs {
    fn order(&mut self, _ctx: OrderCtx<'_>, _waiting: &mut [Box<Req>]) {}
}
