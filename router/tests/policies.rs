//! Cache-aware scheduling pays: on interleaved prefix groups with a pool too small to keep every
//! group cached, LPM (and DFS-weight) hit the cache more than FCFS, with identical outputs.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use router::{Policy, Scheduler};

fn hit_rate(policy: Policy) -> (f64, std::collections::HashMap<u64, Outcome>) {
    let mut cfg = config(1, 200);
    cfg.policy = policy;
    cfg.max_running_requests = 2;
    let mut s = Scheduler::new(cfg).unwrap();
    let mut r = FakeRunner::default();
    let groups: Vec<Vec<u32>> = (0..4u32)
        .map(|g| (0..64).map(|i| (i * 5 + g * 3 + i / 7) % 13).collect())
        .collect();
    for id in 0..40u64 {
        let mut p = groups[id as usize % 4].clone();
        p.extend((0..8).map(|i| (id as u32 + i) % 13));
        s.add_request(req(id, p, 4)).unwrap();
    }
    let out = run_to_idle(&mut s, &mut r, 10_000);
    let c = s.counters();
    (
        c.prefix_hit_tokens as f64 / c.prefix_query_tokens as f64,
        out,
    )
}

#[test]
fn lpm_beats_fcfs_on_interleaved_prefix_groups() {
    let (fcfs, fcfs_out) = hit_rate(Policy::Fcfs);
    let (lpm, lpm_out) = hit_rate(Policy::Lpm);
    let (dfs, dfs_out) = hit_rate(Policy::DfsWeight);
    eprintln!("prefix-cache hit rate: fcfs {fcfs:.3}, lpm {lpm:.3}, dfs-weight {dfs:.3}");
    assert!(lpm > fcfs, "lpm {lpm:.3} <= fcfs {fcfs:.3}");
    assert!(dfs > fcfs, "dfs-weight {dfs:.3} <= fcfs {fcfs:.3}");
    for id in 0..40 {
        assert_eq!(lpm_out[&id].tokens, fcfs_out[&id].tokens);
        assert_eq!(dfs_out[&id].tokens, fcfs_out[&id].tokens);
    }
}
