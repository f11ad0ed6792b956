//! Prompt progress (llama.cpp's `return_progress`): a request that asks is told after every
//! computed chunk of its prompt how far it is, the cached part included; others are told
//! nothing.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use router::{Req, Scheduler, Token};

fn reporting(id: u64, prompt: Vec<Token>) -> Req {
    let mut r = req(id, prompt, 3);
    r.report_progress = true;
    r
}

#[test]
fn each_chunk_reports_its_progress_once_with_the_cached_part() {
    let prompt: Vec<Token> = (0..40).map(|i| i % 15).collect();
    for (page, chunk) in [(1, None), (1, Some(16)), (4, Some(8)), (1, Some(7))] {
        let mut cfg = config(page, 256);
        cfg.chunked_prefill_size = chunk;
        let mut s = Scheduler::new(cfg).unwrap();
        let mut r = FakeRunner::default();
        // Cold: one report per chunk, ending at the whole prompt.
        s.add_request(reporting(1, prompt.clone())).unwrap();
        let cold = run_to_idle(&mut s, &mut r, 500).remove(&1).unwrap();
        let chunks = chunk.map_or(1, |c| prompt.len().div_ceil(c));
        assert_eq!(cold.progress.len(), chunks, "page {page} chunk {chunk:?}");
        let mut last = 0;
        for &(total, cached, processed) in &cold.progress {
            assert_eq!((total, cached), (40, 0));
            assert!(processed > last, "progress only grows");
            last = processed;
        }
        assert_eq!(last, 40);
        assert_eq!(cold.tokens.len(), 3);
        // Warm: the cached part is reported, and the rest takes one chunk.
        s.add_request(reporting(2, prompt.clone())).unwrap();
        let warm = run_to_idle(&mut s, &mut r, 500).remove(&2).unwrap();
        assert_eq!(warm.progress.len(), 1, "page {page} chunk {chunk:?}");
        let (total, cached, processed) = warm.progress[0];
        assert_eq!((total, processed), (40, 40));
        assert!(cached > 0 && cached < 40, "cached {cached}");
        assert_eq!(cached, warm.cached);
        // A request that does not ask hears nothing.
        s.add_request(req(3, prompt.clone(), 3)).unwrap();
        let quiet = run_to_idle(&mut s, &mut r, 500).remove(&3).unwrap();
        assert!(quiet.progress.is_empty());
    }
}
