//! The writer thread (the only code that creates or deletes block files) and the restore scan
//! that rebuilds the index when the tier opens.

use super::file;
use super::keys::BlockKey;
use super::store::{io_err, Job, Shared};
use super::TierError;
use radix_tree::Token;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

/// Rebuilds the index from the block files, oldest first; deletes what cannot be used.
pub(super) fn restore(shared: &Shared) -> Result<(), TierError> {
    let cfg = &shared.cfg;
    let dir = std::fs::read_dir(&shared.blocks).map_err(io_err(&shared.blocks))?;
    let mut found: Vec<(SystemTime, BlockKey, u64)> = Vec::new();
    let mut discarded = 0u64;
    for entry in dir.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let key = name.strip_suffix(".kv").and_then(BlockKey::from_hex);
        let header = key.map(|_| file::read_header(&path, &cfg.fingerprint));
        match (key, header) {
            (Some(key), Some(Ok(Ok(h))))
                if h.key == key && h.bytes_per_token == cfg.bytes_per_token =>
            {
                let mtime = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                found.push((mtime, key, h.file_len()));
            }
            _ => {
                discarded += 1;
                if let Err(e) = std::fs::remove_file(&path) {
                    tracing::warn!(path = %path.display(), error = %e, "cannot delete a stale file");
                }
            }
        }
    }
    found.sort();
    let mut ix = shared.index();
    for (_, key, bytes) in found {
        ix.insert(key, bytes);
    }
    ix.stats.restored_blocks = ix.entries.len() as u64;
    ix.stats.corrupt_blocks += discarded;
    drop(ix);
    if discarded > 0 {
        tracing::warn!(
            files = discarded,
            dir = %shared.blocks.display(),
            "discarded K/V files that were damaged, half-written or from another model or layout"
        );
    }
    let evicted = evict_to_bound(shared);
    let ix = shared.index();
    tracing::info!(
        blocks = ix.entries.len(),
        bytes = ix.bytes,
        evicted,
        "disk tier restored"
    );
    Ok(())
}

/// Deletes least recently used blocks until the bound holds; returns how many went.
pub(super) fn evict_to_bound(shared: &Shared) -> u64 {
    let mut gone = 0;
    loop {
        let victim = {
            let mut ix = shared.index();
            if ix.bytes <= shared.cfg.capacity_bytes {
                break;
            }
            let Some(&(_, key)) = ix.lru.first() else {
                break;
            };
            ix.remove(key);
            ix.stats.blocks_evicted += 1;
            key
        };
        gone += 1;
        let path = shared.path(victim);
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!(path = %path.display(), error = %e, "cannot delete an evicted K/V block");
        }
    }
    gone
}

pub(super) fn write_loop(shared: &Shared, jobs: &crossbeam_channel::Receiver<Job>) {
    while let Ok(job) = jobs.recv() {
        match job {
            Job::Write { key, tokens, kv } => {
                write_block(shared, key, &tokens, &kv);
                shared.pending_bytes.fetch_sub(kv.len(), Ordering::AcqRel);
            }
            Job::Sync(done) => {
                let _ = done.send(());
            }
            Job::Clear(done) => {
                clear_all(shared);
                let _ = done.send(());
            }
        }
    }
}

fn write_block(shared: &Shared, key: BlockKey, tokens: &[Token], kv: &[u8]) {
    let bytes = file::encode(&shared.cfg.fingerprint, key, tokens, kv);
    let len = bytes.len() as u64;
    if len > shared.cfg.capacity_bytes {
        let mut ix = shared.index();
        ix.pending.remove(&key);
        ix.stats.writes_dropped += 1;
        return;
    }
    let path = shared.path(key);
    let tmp = path.with_extension("tmp");
    let written = std::fs::write(&tmp, &bytes).and_then(|()| std::fs::rename(&tmp, &path));
    let mut ix = shared.index();
    ix.pending.remove(&key);
    match written {
        Ok(()) => {
            ix.insert(key, len);
            ix.stats.blocks_written += 1;
            ix.stats.bytes_written += len;
        }
        Err(e) => {
            ix.stats.writes_dropped += 1;
            drop(ix);
            let _ = std::fs::remove_file(&tmp);
            tracing::warn!(path = %path.display(), error = %e, "writing a K/V block failed");
            return;
        }
    }
    drop(ix);
    evict_to_bound(shared);
}

fn clear_all(shared: &Shared) {
    let keys: Vec<BlockKey> = {
        let mut ix = shared.index();
        let keys = ix.entries.keys().copied().collect();
        ix.entries.clear();
        ix.lru.clear();
        ix.bytes = 0;
        keys
    };
    for key in keys {
        let path = shared.path(key);
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!(path = %path.display(), error = %e, "cannot delete a K/V block");
        }
    }
}
