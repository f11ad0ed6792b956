//! Opening the disk tier for a loaded model: its fingerprint and its configuration.
//!
//! The fingerprint ties every block on disk to one model file, architecture, K/V layout and
//! page size, so that a directory written by another model or configuration is never read
//! (its blocks are discarded when the tier opens).

use crate::config::EngineConfig;
use crate::error::StartError;
use page_manager::tier::{block_tokens_for, DiskTier, TierConfig};
use page_manager::KvDims;
use sha2::{Digest, Sha256};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// Bytes hashed at each end of a model file: headers and metadata at the front, the last
/// tensors at the back. Hashing the whole file would cost seconds on large models at every
/// start; its length and both ends tell models apart in practice.
const SAMPLE: u64 = 4 << 20;

/// Hashes a model file's length and both ends, or each file of a model directory.
fn hash_model(h: &mut Sha256, path: &Path) -> std::io::Result<()> {
    if path.is_dir() {
        let mut files: Vec<_> = std::fs::read_dir(path)?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        for f in files {
            h.update(
                f.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            );
            hash_model(h, &f)?;
        }
        return Ok(());
    }
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    h.update(len.to_le_bytes());
    let mut buf = Vec::new();
    (&mut file).take(SAMPLE).read_to_end(&mut buf)?;
    if len > SAMPLE {
        file.seek(SeekFrom::Start(len.saturating_sub(SAMPLE).max(SAMPLE)))?;
        file.take(SAMPLE).read_to_end(&mut buf)?;
    }
    h.update(&buf);
    Ok(())
}

/// What identifies the K/V a configuration computes.
pub(crate) struct Layout<'a> {
    pub architecture: &'a str,
    pub dims: KvDims,
    pub dtype: &'a str,
    pub page_size: usize,
    pub block_tokens: usize,
}

fn fingerprint(model: &Path, layout: &Layout<'_>) -> std::io::Result<[u8; 32]> {
    let mut h = Sha256::new();
    h.update(b"radixserve kv v1\0");
    hash_model(&mut h, model)?;
    let d = layout.dims;
    let text = format!(
        "{}|{}x{}x{}|{}|{}|{}",
        layout.architecture,
        d.layers,
        d.kv_heads,
        d.head_dim,
        layout.dtype,
        layout.page_size,
        layout.block_tokens
    );
    h.update(text.as_bytes());
    Ok(h.finalize().into())
}

/// Opens the disk tier `config` asks for (`None` without `--kv-cache-dir`).
pub(crate) fn open_tier(
    config: &EngineConfig,
    layout: Layout<'_>,
    bytes_per_token: usize,
) -> Result<Option<DiskTier>, StartError> {
    let Some(dir) = &config.kv_cache_dir else {
        return Ok(None);
    };
    let block_tokens = block_tokens_for(config.page_size);
    let layout = Layout {
        block_tokens,
        ..layout
    };
    let fingerprint = fingerprint(&config.model, &layout).map_err(|source| {
        StartError::Tier(page_manager::tier::TierError::Io {
            path: config.model.clone(),
            source,
        })
    })?;
    let tier = DiskTier::open(TierConfig {
        dir: dir.clone(),
        capacity_bytes: config.kv_cache_disk_bytes,
        policy: config.kv_cache_write_policy,
        block_tokens,
        bytes_per_token,
        fingerprint,
        // A quarter of a second of writing at a modest 256 MB/s, and never under 4 blocks.
        queue_bytes: (64usize << 20).max(4 * block_tokens * bytes_per_token),
    })?;
    Ok(Some(tier))
}
