//! The disk tier's state machine against a model, through random lifecycles: requests with
//! shared prefixes are admitted (continuing their pool match on disk), prefilled, decoded and
//! finished over a pool small enough to evict; the cache is flushed; the process "restarts"
//! (gracefully, with a snapshot, or not); block files are damaged at random.
//!
//! The pool is a shadow map from slot to the identity of the K/V it holds (a hash of the
//! namespace and the tokens up to that position), copied to and from disk as bytes. After
//! every operation: the accounting (all tiers) holds, and every row position reads exactly
//! the K/V of its prefix, so a load from disk can never have produced a wrong token. The model
//! of the tier: after a graceful restart every whole block that was cached is found on disk
//! (the bound is large), after a flush nothing is, and the disk stays within its bound.

#![allow(clippy::unwrap_used)]

mod common;

use common::{prefix_hashes, Active, Content};

use page_manager::tier::{DiskTier, KvTransfer, TierConfig, TransferError, WritePolicy};
use page_manager::{KvCacheManager, KvError, ManagerConfig, Slot};
use proptest::prelude::*;
use radix_tree::{EvictionPolicy, Namespace};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::path::Path;

/// The executor's pool: 8 bytes of "K/V" per token.
#[derive(Default)]
struct Pool(HashMap<Slot, Content>);

impl KvTransfer for Pool {
    fn kv_bytes_per_token(&self) -> usize {
        8
    }

    fn read_kv(&self, slots: &[Slot], out: &mut Vec<u8>) -> Result<(), TransferError> {
        for s in slots {
            out.extend_from_slice(&self.0.get(s).copied().unwrap_or(0).to_le_bytes());
        }
        Ok(())
    }

    fn write_kv(&mut self, slots: &[Slot], data: &[u8]) -> Result<(), TransferError> {
        for (s, b) in slots.iter().zip(data.chunks_exact(8)) {
            self.0.insert(*s, u64::from_le_bytes(b.try_into().unwrap()));
        }
        Ok(())
    }
}

struct Sim {
    m: KvCacheManager,
    cfg: ManagerConfig,
    tier: TierConfig,
    rng: StdRng,
    pool: Pool,
    waiting: Vec<(u8, Vec<u32>, usize)>,
    running: Vec<Active>,
    bases: Vec<Vec<u32>>,
    finished: usize,
    /// A block file was damaged since the last flush: completeness is no longer promised.
    damaged: bool,
    /// Tokens loaded from disk, over all restarts; prefixes checked after graceful ones.
    loaded: u64,
    restored: usize,
}

fn namespace(ns: u8) -> Namespace {
    if ns == 0 {
        Namespace::shared()
    } else {
        Namespace::salted("tenant")
    }
}

impl Sim {
    fn new(seed: u64, page_size: usize, dir: &Path) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let cfg = ManagerConfig {
            page_size,
            num_pages: 96 / page_size,
            max_rows: 3,
            max_context: 96,
            disable_radix_cache: false,
            eviction: EvictionPolicy::ALL[rng.gen_range(0..EvictionPolicy::ALL.len())],
        };
        let block_tokens = if page_size == 1 { 4 } else { 2 * page_size };
        let tier = TierConfig {
            dir: dir.to_path_buf(),
            capacity_bytes: 1 << 30,
            policy: if rng.gen_range(0..2) == 0 {
                WritePolicy::WriteThrough
            } else {
                WritePolicy::WriteBack
            },
            block_tokens,
            bytes_per_token: 8,
            fingerprint: [seed as u8; 32],
            queue_bytes: 1 << 30,
        };
        let bases = (0..3)
            .map(|_| {
                (0..rng.gen_range(8..48))
                    .map(|_| rng.gen_range(0..3))
                    .collect()
            })
            .collect();
        let m = Self::manager(&cfg, &tier);
        Sim {
            m,
            cfg,
            tier,
            rng,
            pool: Pool::default(),
            waiting: Vec::new(),
            running: Vec::new(),
            bases,
            finished: 0,
            damaged: false,
            loaded: 0,
            restored: 0,
        }
    }

    fn manager(cfg: &ManagerConfig, tier: &TierConfig) -> KvCacheManager {
        let mut m = KvCacheManager::new(cfg).unwrap();
        m.attach_disk_tier(DiskTier::open(tier.clone()).unwrap())
            .unwrap();
        m
    }

    fn arrive(&mut self) {
        let base = &self.bases[self.rng.gen_range(0..self.bases.len())];
        let mut prompt = base[..self.rng.gen_range(0..=base.len())].to_vec();
        for _ in 0..self.rng.gen_range(1..6) {
            prompt.push(self.rng.gen_range(0..3));
        }
        let ns = u8::from(self.rng.gen_range(0..4) == 0);
        let max_new = self.rng.gen_range(1..5);
        self.waiting.push((ns, prompt, max_new));
    }

    fn check_rows(&self) {
        for a in &self.running {
            let slots = self.m.row_slots(a.row).unwrap();
            let expect = prefix_hashes(a.ns, &a.tokens[..slots.len()]);
            for (i, s) in slots.iter().enumerate() {
                assert_eq!(
                    self.pool.0.get(s),
                    Some(&expect[i]),
                    "position {i} reads wrong K/V"
                );
            }
        }
    }

    fn admit(&mut self) {
        if self.waiting.is_empty() || self.m.free_rows() == 0 {
            return;
        }
        let (ns, tokens, max_new) = self.waiting.remove(0);
        let nsp = namespace(ns);
        let hit = self.m.match_request_prefix(&nsp, &tokens, None);
        let limit = KvCacheManager::prefix_limit(tokens.len(), None);
        let hit = self
            .m
            .extend_from_disk(&nsp, &tokens, limit, hit, &mut self.pool)
            .unwrap();
        let row = self.m.admit(nsp, hit).unwrap();
        let prompt_len = tokens.len();
        self.running.push(Active {
            row,
            ns,
            tokens,
            prompt_len,
            max_new,
        });
    }

    fn step(&mut self, idx: usize) {
        let row = self.running[idx].row;
        let kv_len = self.m.row_info(row).unwrap().kv_len;
        let len = self.running[idx].tokens.len();
        let count = (len - kv_len).min(16);
        match self.m.alloc_extend(row, count) {
            Ok(slots) => {
                // The scheduler's rule: copy-outs before the forward writes the pool.
                self.m.flush_copy_outs(&self.pool);
                let a = &self.running[idx];
                let hashes = prefix_hashes(a.ns, &a.tokens[..kv_len + count]);
                for (i, &s) in slots.iter().enumerate() {
                    self.pool.0.insert(s, hashes[kv_len + i]);
                }
                let kv_len = kv_len + count;
                if kv_len < len {
                    let tokens = self.running[idx].tokens[..kv_len].to_vec();
                    self.m.cache_unfinished(row, &tokens).unwrap();
                    return;
                }
                let t = self.rng.gen_range(0..3);
                let a = &mut self.running[idx];
                a.tokens.push(t);
                if a.tokens.len() - a.prompt_len >= a.max_new {
                    self.finish(idx);
                } else if kv_len <= a.prompt_len {
                    let tokens = self.running[idx].tokens[..kv_len].to_vec();
                    self.m.cache_unfinished(row, &tokens).unwrap();
                }
            }
            Err(KvError::OutOfMemory { .. }) => {
                let a = self.running.swap_remove(idx);
                self.m.release(a.row).unwrap();
                self.waiting
                    .push((a.ns, a.tokens[..a.prompt_len].to_vec(), a.max_new));
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }

    fn finish(&mut self, idx: usize) {
        let a = self.running.swap_remove(idx);
        let kv_len = self.m.row_info(a.row).unwrap().kv_len;
        self.m.cache_finished(a.row, &a.tokens[..kv_len]).unwrap();
        self.finished += 1;
    }

    /// Every whole block of every cached prefix, as (namespace, tokens up to its end).
    fn cached_blocks(&self) -> Vec<(u8, Vec<u32>)> {
        let b = self.tier.block_tokens;
        self.m
            .tree()
            .leaf_paths()
            .into_iter()
            .filter(|p| p.tokens.len() >= b)
            .map(|p| {
                let ns = u8::from(!p.namespace.is_shared());
                (ns, p.tokens[..p.tokens.len() / b * b].to_vec())
            })
            .collect()
    }

    fn restart(&mut self, graceful: bool) {
        while !self.running.is_empty() {
            self.finish(0);
        }
        let cached = self.cached_blocks();
        self.loaded += self.m.tier_stats().unwrap().hit_tokens;
        if graceful {
            self.m.snapshot(&self.pool);
        }
        // The old process is gone, its pool with it: dropping its tier first lets its writer
        // finish before the new one opens the directory.
        self.m = KvCacheManager::new(&self.cfg).unwrap();
        self.m = Self::manager(&self.cfg, &self.tier);
        self.pool = Pool::default();
        self.m.check_accounting().unwrap();
        if !graceful || self.damaged {
            return;
        }
        // Everything cached before comes back, with the right K/V.
        for (ns, tokens) in cached {
            let nsp = namespace(ns);
            let hit = self.m.match_prefix(&nsp, &tokens);
            let hit = self
                .m
                .extend_from_disk(&nsp, &tokens, tokens.len(), hit, &mut self.pool)
                .unwrap();
            assert_eq!(hit.len, tokens.len(), "a cached prefix was not restored");
            let slots = self.m.tree().path_values(hit.last_node).unwrap();
            let expect = prefix_hashes(ns, &tokens);
            for (s, e) in slots.iter().zip(&expect) {
                assert_eq!(self.pool.0.get(s), Some(e), "restored K/V differs");
            }
            self.m.check_accounting().unwrap();
            self.restored += 1;
        }
    }

    fn damage_a_block(&mut self) {
        let dir = self.tier.dir.join("blocks");
        let files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        if files.is_empty() {
            return;
        }
        let path = &files[self.rng.gen_range(0..files.len())];
        let bytes = std::fs::read(path).ok().filter(|b| !b.is_empty());
        // A file the writer is still filling may be empty: nothing to damage yet.
        if let Some(mut bytes) = bytes {
            let i = self.rng.gen_range(0..bytes.len());
            bytes[i] ^= 1 << self.rng.gen_range(0..8);
            // The writer may have deleted it meanwhile; then there is nothing to damage.
            let _ = std::fs::write(path, bytes);
            self.damaged = true;
        }
    }

    fn op(&mut self) {
        match self.rng.gen_range(0..40) {
            0..=7 => self.arrive(),
            8..=15 => self.admit(),
            16..=33 if !self.running.is_empty() => {
                let i = self.rng.gen_range(0..self.running.len());
                self.step(i);
            }
            34 => self.restart(true),
            35 => self.restart(false),
            36 if self.running.is_empty() => {
                self.m.flush().unwrap();
                self.pool.0.clear();
                self.damaged = false;
                let stats = self.m.tier_stats().unwrap();
                assert_eq!(
                    (stats.blocks, stats.bytes),
                    (0, 0),
                    "flush empties the disk"
                );
            }
            37 => self.damage_a_block(),
            _ => {}
        }
        self.m.check_accounting().unwrap();
        self.check_rows();
        let s = self.m.tier_stats().unwrap();
        assert!(s.bytes <= s.capacity_bytes);
    }
}

/// Runs the simulation; returns (tokens loaded from disk, prefixes checked after restarts).
fn run(seed: u64, page_size: usize, lifecycles: usize) -> (u64, usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut sim = Sim::new(seed, page_size, dir.path());
    let mut guard = 0;
    while sim.finished < lifecycles {
        sim.op();
        guard += 1;
        assert!(guard < lifecycles * 400, "no progress");
    }
    sim.restart(true);
    (sim.loaded, sim.restored)
}

#[test]
fn lifecycles_with_evictions_restarts_and_damage_never_read_wrong_kv() {
    for (i, ps) in [1usize, 4, 16].into_iter().enumerate() {
        let (mut loaded, mut restored) = (0, 0);
        for s in 0..3 {
            let (l, r) = run(500 + (i * 10 + s) as u64, ps, 150);
            loaded += l;
            restored += r;
        }
        assert!(
            loaded > 0,
            "page size {ps}: nothing was ever loaded from disk"
        );
        assert!(restored > 0, "page size {ps}: no restore was checked");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn random_tier_lifecycles_keep_exact_accounting(
        seed in any::<u64>(),
        page_size in prop::sample::select(vec![1usize, 4, 16]),
    ) {
        run(seed, page_size, 40);
    }
}
