//! The disk tier's part of the lifecycle: what eviction and caching hand to the tier, loading
//! a prefix back from disk at admission, the snapshot at shutdown, and the tier's checks.
//!
//! One rule keeps copies correct: K/V of blocks queued for writing ([`CopyOut`]) is copied
//! out of the pool before anything writes the pool again. Evicted slots go back to the free
//! list at once, but the pool is only written by a forward or by a load, and the scheduler
//! calls [`KvCacheManager::flush_copy_outs`] before every forward, as a load does itself.

use super::{KvCacheManager, PrefixHit, RowInfo};
use crate::error::KvError;
use crate::tier::keys::CopyOut;
use crate::tier::{block_keys, DiskTier, KvTransfer, TierStats, WritePolicy};
use crate::Slot;
use radix_tree::{KeyRef, Namespace, NodeId, PrefixPath, Token};
use std::time::Instant;

/// The disk tier and the blocks waiting to be copied out of the pool for it.
#[derive(Debug)]
pub(super) struct Tiering {
    disk: DiskTier,
    copies: Vec<CopyOut>,
}

impl Tiering {
    fn block(&self) -> usize {
        self.disk.config().block_tokens
    }

    /// Claims the whole blocks of `path` that end after `path.start` and are neither on disk
    /// nor already claimed, and queues their copy-out.
    fn record(&mut self, path: &PrefixPath<Slot>) {
        let b = self.block();
        let blocks = path.tokens.len() / b;
        let first = path.start / b;
        if first >= blocks {
            return;
        }
        let seed = self.disk.config().fingerprint;
        let keys = block_keys(&seed, &path.namespace, &path.tokens[..blocks * b], b);
        for (i, &key) in keys.iter().enumerate().skip(first) {
            if self.disk.claim(key) {
                self.copies.push(CopyOut {
                    key,
                    tokens: path.tokens[i * b..(i + 1) * b].to_vec(),
                    slots: path.values[i * b..(i + 1) * b].to_vec(),
                });
            }
        }
    }

    /// Copies every queued block out of the pool and hands it to the writer (`wait`: even
    /// past the queue bound).
    fn drain(&mut self, xfer: &dyn KvTransfer, wait: bool) {
        let bpt = xfer.kv_bytes_per_token();
        for c in std::mem::take(&mut self.copies) {
            let mut bytes = Vec::with_capacity(c.slots.len() * bpt);
            match xfer.read_kv(&c.slots, &mut bytes) {
                Ok(()) => {
                    self.disk.submit(c.key, c.tokens, bytes, wait);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "copying a K/V block out of the pool failed");
                    self.disk.unclaim(c.key);
                }
            }
        }
    }
}

impl KvCacheManager {
    /// Adds a disk tier below the pool. Refused without the radix cache, or when its blocks
    /// are not whole pages.
    pub fn attach_disk_tier(&mut self, disk: DiskTier) -> Result<(), KvError> {
        if self.tree.is_disabled() {
            return Err(KvError::Config(
                "the disk tier needs the radix cache (it is disabled)".into(),
            ));
        }
        let b = disk.config().block_tokens;
        if b == 0 || !b.is_multiple_of(self.page_size()) {
            return Err(KvError::Config(format!(
                "disk blocks of {b} tokens are not whole pages of {}",
                self.page_size()
            )));
        }
        self.tier = Some(Tiering {
            disk,
            copies: Vec::new(),
        });
        Ok(())
    }

    /// The disk tier, if one is attached.
    pub fn disk_tier(&self) -> Option<&DiskTier> {
        self.tier.as_ref().map(|t| &t.disk)
    }

    /// The disk tier's counters, if one is attached.
    pub fn tier_stats(&self) -> Option<TierStats> {
        self.disk_tier().map(DiskTier::stats)
    }

    /// Blocks claimed for writing whose K/V is still in the pool.
    pub fn pending_copy_outs(&self) -> usize {
        self.tier.as_ref().map_or(0, |t| t.copies.len())
    }

    /// Evicts `tokens` or more from the tree; with a disk tier, the evicted blocks that are
    /// not on disk yet are queued for writing first.
    pub(super) fn evict_tree(&mut self, tokens: usize) -> Vec<Slot> {
        let Some(tier) = self.tier.as_mut() else {
            return self.tree.evict(tokens);
        };
        let mut out = Vec::new();
        let mut paths = Vec::new();
        self.tree
            .evict_with(tokens, &mut out, &mut |path| paths.push(path));
        for path in &paths {
            tier.record(path);
        }
        out
    }

    /// After a row's `tokens` were inserted, ending at `last_node`: under `write_through`,
    /// queues the blocks past the row's already cached part for writing.
    pub(super) fn write_through(
        &mut self,
        row: &RowInfo,
        tokens: &[Token],
        last_node: NodeId,
    ) -> Result<(), KvError> {
        let Some(tier) = self.tier.as_mut() else {
            return Ok(());
        };
        if tier.disk.config().policy != WritePolicy::WriteThrough {
            return Ok(());
        }
        let path = PrefixPath {
            namespace: row.namespace.clone(),
            tokens: tokens.to_vec(),
            values: self.tree.path_values(last_node)?,
            start: row.protected_len,
        };
        tier.record(&path);
        Ok(())
    }

    /// Copies the blocks queued for writing out of the pool. Call before every forward.
    pub fn flush_copy_outs(&mut self, xfer: &dyn KvTransfer) {
        if let Some(tier) = self.tier.as_mut() {
            tier.drain(xfer, false);
        }
    }

    /// Continues a pool match on disk: the whole blocks of `tokens[..limit]` after `hit` that
    /// are on disk, in order, are read, checked, copied into new slots and inserted into the
    /// tree. Returns the longer hit, or `hit` when nothing could be loaded (a missing or damaged
    /// block ends the run; a pool too full to take the blocks loads nothing).
    pub fn extend_from_disk(
        &mut self,
        namespace: &Namespace,
        tokens: &[Token],
        limit: usize,
        hit: PrefixHit,
        xfer: &mut dyn KvTransfer,
    ) -> Result<PrefixHit, KvError> {
        let started = Instant::now();
        let Some((end, data)) = self.read_disk_run(namespace, tokens, limit, hit.len, &*xfer)
        else {
            return Ok(hit);
        };
        let n = end - hit.len;
        // Keep the matched prefix in the tree while room is made.
        self.tree.inc_lock_ref(hit.last_node)?;
        let slots = self
            .ensure_free_pages(n / self.page_size())
            .and_then(|()| self.alloc.alloc(n));
        self.tree.dec_lock_ref(hit.last_node)?;
        let slots = match slots {
            Ok(s) => s,
            Err(KvError::OutOfMemory { .. }) => return Ok(hit),
            Err(e) => return Err(e),
        };
        // What that eviction released is copied out before the load overwrites it.
        self.flush_copy_outs(&*xfer);
        if let Err(e) = xfer.write_kv(&slots, &data) {
            tracing::warn!(error = %e, "copying K/V from disk into the pool failed");
            self.alloc.free(&slots)?;
            return Ok(hit);
        }
        let mut values = self.tree.path_values(hit.last_node)?;
        values.extend_from_slice(&slots);
        let out = self
            .tree
            .insert(KeyRef::new(&tokens[..end], namespace), &values)?;
        if out.prefix_len > hit.len {
            // Stored meanwhile: the tree keeps its own slots, these are duplicates.
            self.alloc.free(&slots[..out.prefix_len - hit.len])?;
        }
        if let Some(tier) = &self.tier {
            tier.disk.record_load(n, started.elapsed().as_secs_f64());
        }
        Ok(PrefixHit {
            len: end,
            last_node: out.last_node,
        })
    }

    /// Reads the run of disk blocks that continues a match of `matched` tokens: the end of the
    /// run and the K/V of positions `matched..end`, or `None` when no block continues it.
    fn read_disk_run(
        &self,
        namespace: &Namespace,
        tokens: &[Token],
        limit: usize,
        matched: usize,
        xfer: &dyn KvTransfer,
    ) -> Option<(usize, Vec<u8>)> {
        let tier = self.tier.as_ref()?;
        let b = tier.block();
        let usable = limit.min(tokens.len()) / b;
        let first = matched / b;
        if first >= usable {
            return None;
        }
        let keys = block_keys(
            &tier.disk.config().fingerprint,
            namespace,
            &tokens[..usable * b],
            b,
        );
        let bpt = xfer.kv_bytes_per_token();
        let mut data = Vec::new();
        let mut end = matched;
        for (i, &key) in keys.iter().enumerate().skip(first) {
            if !tier.disk.contains(key) {
                break;
            }
            let Some(kv) = tier.disk.read(key, &tokens[i * b..(i + 1) * b]) else {
                break;
            };
            let skip = (matched.max(i * b) - i * b) * bpt;
            data.extend_from_slice(&kv[skip..]);
            end = (i + 1) * b;
        }
        (end > matched).then_some((end, data))
    }

    /// Writes every cached block that is not on disk yet and waits for the writer: what a
    /// graceful shutdown leaves for the next start. Returns the blocks written.
    pub fn snapshot(&mut self, xfer: &dyn KvTransfer) -> usize {
        let paths = self.tree.leaf_paths();
        let Some(tier) = self.tier.as_mut() else {
            return 0;
        };
        for path in paths {
            tier.record(&PrefixPath { start: 0, ..path });
        }
        let queued = tier.copies.len();
        tier.drain(xfer, true);
        tier.disk.sync();
        queued
    }

    /// Empties the disk tier with the cache (part of [`KvCacheManager::flush`]).
    pub(super) fn flush_tier(&mut self) {
        if let Some(tier) = self.tier.as_mut() {
            for c in std::mem::take(&mut tier.copies) {
                tier.disk.unclaim(c.key);
            }
            tier.disk.clear();
        }
    }

    /// The tier's part of [`KvCacheManager::check_accounting`]: the disk index adds up and
    /// stays within its bound, and every block waiting for its copy-out is claimed and names
    /// valid slots.
    pub(super) fn check_tier(&self) -> Result<(), KvError> {
        let Some(tier) = &self.tier else {
            return Ok(());
        };
        tier.disk.check().map_err(KvError::Accounting)?;
        let b = tier.block();
        let max = (self.alloc.num_pages() + 1) * self.page_size();
        for c in &tier.copies {
            if !tier.disk.is_claimed(c.key) {
                return Err(KvError::Accounting(format!(
                    "block {} waits for its copy-out unclaimed",
                    c.key.hex()
                )));
            }
            if c.slots.len() != b
                || c.slots
                    .iter()
                    .any(|&s| s as usize >= max || (s as usize) < self.page_size())
            {
                return Err(KvError::Accounting(format!(
                    "block {} names slots outside the pool",
                    c.key.hex()
                )));
            }
        }
        Ok(())
    }
}
