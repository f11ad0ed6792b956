//! Randomised request lifecycles over a small pool: requests arrive with prompts that share
//! prefixes, match, get admitted, prefill in chunks, decode, and finish, abort or get retracted,
//! with page sizes 1, 4 and 16 and a pool small enough to force eviction. After every operation
//! the accounting is checked, and every row position is checked to point at a slot holding the KV
//! of exactly that prefix (a shadow of what the executor would have written). At the end, with no
//! request left, available + evictable == capacity.

#![allow(clippy::unwrap_used)]

mod common;

use common::{prefix_hashes, Active, Content};

use page_manager::{KvCacheManager, KvError, ManagerConfig, Slot};
use proptest::prelude::*;
use radix_tree::{EvictionPolicy, Namespace};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;

struct Sim {
    m: KvCacheManager,
    rng: StdRng,
    namespaces: [Namespace; 2],
    waiting: Vec<(u8, Vec<u32>, usize, usize)>,
    running: Vec<Active>,
    /// What the executor would hold at each slot.
    kv: HashMap<Slot, Content>,
    bases: Vec<Vec<u32>>,
    finished: usize,
    chunk: usize,
}

impl Sim {
    fn new(seed: u64, page_size: usize) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let num_pages = match page_size {
            1 => 48,
            4 => 16,
            _ => 6,
        };
        let policy = EvictionPolicy::ALL[rng.gen_range(0..EvictionPolicy::ALL.len())];
        let m = KvCacheManager::new(&ManagerConfig {
            page_size,
            num_pages,
            max_rows: 3,
            max_context: 64,
            disable_radix_cache: rng.gen_range(0..8) == 0,
            eviction: policy,
        })
        .unwrap();
        let bases = (0..3)
            .map(|_| {
                (0..rng.gen_range(2..24))
                    .map(|_| rng.gen_range(0..3))
                    .collect()
            })
            .collect();
        Sim {
            m,
            rng,
            namespaces: [Namespace::shared(), Namespace::salted("x")],
            waiting: Vec::new(),
            running: Vec::new(),
            kv: HashMap::new(),
            bases,
            finished: 0,
            chunk: [3, 5, 64][seed as usize % 3],
        }
    }

    fn arrive(&mut self) {
        let base = &self.bases[self.rng.gen_range(0..self.bases.len())];
        let mut prompt = base[..self.rng.gen_range(0..=base.len())].to_vec();
        for _ in 0..self.rng.gen_range(1..8) {
            prompt.push(self.rng.gen_range(0..3));
        }
        let ns = if self.rng.gen_range(0..4) == 0 { 1 } else { 0 };
        let max_new = self.rng.gen_range(1..6);
        let len = prompt.len();
        self.waiting.push((ns, prompt, len, max_new));
    }

    /// Slots of a row must hold the KV of exactly the row's token prefixes.
    fn check_rows(&self) {
        for a in &self.running {
            let slots = self.m.row_slots(a.row).unwrap();
            let expect = prefix_hashes(a.ns, &a.tokens[..slots.len()]);
            for (i, s) in slots.iter().enumerate() {
                assert_eq!(
                    self.kv.get(s),
                    Some(&expect[i]),
                    "row position {i} reads wrong KV"
                );
            }
        }
    }

    /// The executor writes KV for the newly allocated positions.
    fn compute(&mut self, idx: usize, from: usize, slots: &[Slot]) {
        let a = &self.running[idx];
        let hashes = prefix_hashes(a.ns, &a.tokens[..from + slots.len()]);
        for (i, &s) in slots.iter().enumerate() {
            self.kv.insert(s, hashes[from + i]);
        }
    }

    fn admit(&mut self) {
        if self.waiting.is_empty() || self.m.free_rows() == 0 {
            return;
        }
        let (ns, tokens, prompt_len, max_new) = self.waiting.remove(0);
        let namespace = self.namespaces[ns as usize].clone();
        let hit = self.m.match_request_prefix(&namespace, &tokens, None);
        let row = self.m.admit(namespace, hit).unwrap();
        self.running.push(Active {
            row,
            ns,
            tokens,
            prompt_len,
            max_new,
        });
    }

    /// One prefill chunk or one decode step for a running request.
    fn step(&mut self, idx: usize) {
        let row = self.running[idx].row;
        let kv_len = self.m.row_info(row).unwrap().kv_len;
        let len = self.running[idx].tokens.len();
        // A request has KV for all but its last sampled token; a prefill computes up to `len`.
        let count = if kv_len < len {
            (len - kv_len).min(self.chunk)
        } else {
            unreachable!("every running request has one token without KV")
        };
        match self.m.alloc_extend(row, count) {
            Ok(slots) => {
                self.compute(idx, kv_len, &slots);
                let kv_len = kv_len + count;
                let a = &mut self.running[idx];
                if kv_len < len {
                    // Mid-prefill (a chunk), or a retracted request re-prefilling.
                    let tokens = a.tokens[..kv_len].to_vec();
                    self.m.cache_unfinished(row, &tokens).unwrap();
                    return;
                }
                // Prefill done or a decode step: sample a token.
                let t = self.rng.gen_range(0..3);
                let a = &mut self.running[idx];
                a.tokens.push(t);
                let first = kv_len == a.prompt_len || kv_len <= a.prompt_len;
                let outputs = a.tokens.len() - a.prompt_len;
                if outputs >= a.max_new {
                    self.finish(idx, false);
                } else if first {
                    let tokens = self.running[idx].tokens[..kv_len].to_vec();
                    self.m.cache_unfinished(row, &tokens).unwrap();
                }
            }
            Err(KvError::OutOfMemory { .. }) => self.retract(idx),
            Err(e) => panic!("unexpected {e}"),
        }
    }

    fn finish(&mut self, idx: usize, abort: bool) {
        let a = self.running.swap_remove(idx);
        let kv_len = self.m.row_info(a.row).unwrap().kv_len;
        if abort && self.rng.gen_range(0..2) == 0 {
            // A request aborted before its KV is worth keeping.
            self.m.release(a.row).unwrap();
        } else {
            self.m.cache_finished(a.row, &a.tokens[..kv_len]).unwrap();
        }
        self.finished += 1;
    }

    fn retract(&mut self, idx: usize) {
        let a = self.running.swap_remove(idx);
        self.m.release(a.row).unwrap();
        self.waiting.push((a.ns, a.tokens, a.prompt_len, a.max_new));
    }

    fn op(&mut self) {
        match self.rng.gen_range(0..10) {
            0..=1 => self.arrive(),
            2..=3 => self.admit(),
            4..=7 if !self.running.is_empty() => {
                let i = self.rng.gen_range(0..self.running.len());
                self.step(i);
            }
            8 if !self.running.is_empty() => {
                let i = self.rng.gen_range(0..self.running.len());
                if self.rng.gen_range(0..3) == 0 {
                    self.retract(i);
                } else {
                    self.finish(i, true);
                }
            }
            9 if self.running.is_empty() && self.rng.gen_range(0..20) == 0 => {
                self.m.flush().unwrap();
                self.kv.clear();
            }
            _ => {}
        }
        self.m.check_accounting().unwrap();
        self.check_rows();
    }

    fn drain(&mut self) {
        while !self.running.is_empty() {
            self.finish(0, true);
        }
        self.waiting.clear();
        let acc = self.m.check_accounting().unwrap();
        assert_eq!((acc.active_rows, acc.protected, acc.private), (0, 0, 0));
        assert_eq!(acc.available + acc.evictable, acc.capacity);
    }
}

fn run(seed: u64, page_size: usize, lifecycles: usize) -> usize {
    let mut sim = Sim::new(seed, page_size);
    let mut guard = 0;
    while sim.finished < lifecycles {
        sim.op();
        guard += 1;
        assert!(guard < lifecycles * 400, "simulation made no progress");
    }
    sim.drain();
    sim.finished
}

#[test]
fn ten_thousand_lifecycles_without_an_accounting_violation() {
    let mut total = 0;
    for (i, ps) in [1usize, 4, 16].into_iter().enumerate() {
        for s in 0..6 {
            total += run(100 + (i * 10 + s) as u64, ps, 600);
        }
    }
    assert!(total >= 10_000, "{total} lifecycles");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn random_lifecycles_keep_exact_accounting(
        seed in any::<u64>(),
        page_size in prop::sample::select(vec![1usize, 4, 16]),
    ) {
        run(seed, page_size, 60);
    }
}
