//! Sizing the KV pool from model dimensions and a memory budget.

use crate::error::KvError;

/// The model dimensions that decide the size of one token's K/V.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvDims {
    /// Transformer layers.
    pub layers: usize,
    /// Key/value heads per layer.
    pub kv_heads: usize,
    /// Dimension of one head.
    pub head_dim: usize,
    /// Bytes per stored element (4 for f32, 2 for f16/bf16).
    pub dtype_bytes: usize,
}

impl KvDims {
    /// Bytes of K plus V for one token across all layers.
    pub fn bytes_per_token(&self) -> usize {
        2 * self.layers * self.kv_heads * self.head_dim * self.dtype_bytes
    }
}

/// How many slots a memory budget buys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvCapacity {
    /// Tokens per page.
    pub page_size: usize,
    /// Allocatable pages (page 0, the padding target, excluded).
    pub num_pages: usize,
    /// Allocatable slots: `num_pages * page_size`.
    pub num_slots: usize,
    /// Slots the executor must allocate per layer: the allocatable ones plus reserved page 0.
    pub storage_slots: usize,
    /// Bytes of K/V the pool occupies.
    pub bytes: usize,
}

impl KvCapacity {
    /// The largest pool (including the reserved page 0) that fits `budget_bytes`.
    pub fn plan(dims: KvDims, budget_bytes: usize, page_size: usize) -> Result<Self, KvError> {
        if page_size == 0 {
            return Err(KvError::Config("page size must be at least 1".into()));
        }
        let per_token = dims.bytes_per_token();
        if per_token == 0 {
            return Err(KvError::Config(
                "model dimensions give 0 bytes per token".into(),
            ));
        }
        let pages_total = budget_bytes / (per_token * page_size);
        if pages_total < 2 {
            return Err(KvError::Config(format!(
                "a KV budget of {budget_bytes} bytes holds fewer than one page of {page_size} tokens \
                 ({per_token} bytes per token) beside the reserved page"
            )));
        }
        Ok(Self::with_pages(pages_total - 1, page_size, per_token))
    }

    /// A pool of exactly `num_slots` allocatable slots (rounded down to whole pages).
    pub fn from_slots(num_slots: usize, page_size: usize, dims: KvDims) -> Result<Self, KvError> {
        if page_size == 0 || num_slots < page_size {
            return Err(KvError::Config(format!(
                "a pool of {num_slots} slots holds no page of {page_size} tokens"
            )));
        }
        Ok(Self::with_pages(
            num_slots / page_size,
            page_size,
            dims.bytes_per_token(),
        ))
    }

    fn with_pages(num_pages: usize, page_size: usize, per_token: usize) -> Self {
        let storage_slots = (num_pages + 1) * page_size;
        KvCapacity {
            page_size,
            num_pages,
            num_slots: num_pages * page_size,
            storage_slots,
            bytes: storage_slots * per_token,
        }
    }
}
