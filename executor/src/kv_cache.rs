//! The K/V pools a model reads and writes by slot, and their copy to and from bytes (what the
//! disk tier stores).
//!
//! The byte layout is token by token: for each slot, for each layer, the K row then the V row,
//! each `kv_heads * head_dim` values in the pool's element type, little-endian (f32 for burn
//! pools, f32/f16/bf16 bits for host pools). The disk tier's fingerprint carries the element
//! type, so bytes written by one layout are never read by another.

use burn::tensor::backend::Backend;
use burn::tensor::{IndexingUpdateOp, Int, Tensor};

use crate::error::{ExecutorError, Result};
use crate::host::HostKv;
use crate::kv_dtype::KvDtype;
use crate::model::{index, tensor2, to_vec};
use crate::weights::LlamaConfig;

/// Per-layer K and V pools, `[num_slots, kv_heads * head_dim]` each; slot 0 is the padding target.
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    pub(crate) k: Vec<Tensor<B, 2>>,
    pub(crate) v: Vec<Tensor<B, 2>>,
    pub(crate) num_slots: usize,
    /// Host pools instead of backend tensors (models with host kernels).
    pub(crate) host: Option<HostKv>,
}

impl<B: Backend> KvCache<B> {
    /// Allocates zeroed pools of `num_slots` slots (slot 0 included) for `config`.
    pub fn new(config: &LlamaConfig, num_slots: usize, device: &B::Device) -> Self {
        let width = config.num_kv_heads * config.head_dim;
        let make = || {
            (0..config.num_layers)
                .map(|_| Tensor::<B, 2>::zeros([num_slots.max(1), width], device))
                .collect()
        };
        Self {
            k: make(),
            v: make(),
            num_slots: num_slots.max(1),
            host: None,
        }
    }

    /// Allocates zeroed host pools of `dtype` values (for the host forward of
    /// [`LlamaModel::with_host_kernels`]).
    pub fn new_host(config: &LlamaConfig, num_slots: usize, dtype: KvDtype) -> Self {
        Self {
            k: Vec::new(),
            v: Vec::new(),
            num_slots: num_slots.max(1),
            host: Some(HostKv::new(config, num_slots.max(1), dtype)),
        }
    }

    /// Whether the pools live in host memory.
    pub fn is_host(&self) -> bool {
        self.host.is_some()
    }

    /// Pool size in slots (slot 0 included).
    pub fn num_slots(&self) -> usize {
        self.num_slots
    }

    /// K rows of `layer` at `slots` (for tests and debugging).
    pub fn read_k(&self, layer: usize, slots: &[usize]) -> Result<Vec<f32>> {
        if let Some(h) = &self.host {
            let pool = h.k.get(layer).ok_or(ExecutorError::NoLayer(layer))?;
            let mut out = vec![0f32; slots.len() * h.width];
            for (row, &s) in out.chunks_exact_mut(h.width).zip(slots) {
                if (s + 1) * h.width > pool.len() {
                    return Err(ExecutorError::KvMismatch("slot outside the pool"));
                }
                pool.read(s * h.width, row);
            }
            return Ok(out);
        }
        let t = self.k.get(layer).ok_or(ExecutorError::NoLayer(layer))?;
        let dev = t.device();
        to_vec(t.clone().select(0, index(slots, &dev)))
    }
}

/// Stores `rows` at the `idx` rows of `pool` exactly. burn 0.21's `select_assign` only adds, so
/// it first adds minus the old rows (x + -x is exactly 0) and then the new ones (0 + new is
/// exactly new), with no rounding from an `old + (new - old)` update. The pool is moved out,
/// not cloned, so that the backend can update it in place.
pub(crate) fn assign_rows<B: Backend>(
    pool: &mut Tensor<B, 2>,
    idx: Tensor<B, 1, Int>,
    rows: Tensor<B, 2>,
) {
    let old = pool.clone().select(0, idx.clone());
    let placeholder = Tensor::<B, 2>::zeros([1, 1], &pool.device());
    let taken = std::mem::replace(pool, placeholder);
    *pool = taken
        .select_assign(0, idx.clone(), old.neg(), IndexingUpdateOp::Add)
        .select_assign(0, idx, rows, IndexingUpdateOp::Add);
}

impl<B: Backend> KvCache<B> {
    /// Layers and values per K (or V) row.
    fn shape(&self) -> (usize, usize) {
        match &self.host {
            Some(h) => (h.k.len(), h.width),
            None => (self.k.len(), self.k.first().map_or(0, |t| t.dims()[1])),
        }
    }

    /// Bytes per stored value.
    fn value_bytes(&self) -> usize {
        self.host.as_ref().map_or(4, |h| h.dtype.bytes())
    }

    /// Bytes of K and V of one token across all layers.
    pub fn bytes_per_token(&self) -> usize {
        let (layers, width) = self.shape();
        2 * layers * width * self.value_bytes()
    }

    fn check_slots(&self, slots: &[u32]) -> Result<()> {
        match slots.iter().find(|&&s| s as usize >= self.num_slots) {
            Some(_) => Err(ExecutorError::KvMismatch("slot outside the pool")),
            None => Ok(()),
        }
    }

    /// Appends the K/V of `slots` to `out` in the byte layout of this module.
    pub fn read_bytes(&self, slots: &[u32], out: &mut Vec<u8>) -> Result<()> {
        self.check_slots(slots)?;
        let (layers, width) = self.shape();
        out.reserve(slots.len() * self.bytes_per_token());
        if let Some(h) = &self.host {
            for &s in slots {
                for l in 0..layers {
                    h.k[l].read_raw(s as usize * width, width, out);
                    h.v[l].read_raw(s as usize * width, width, out);
                }
            }
            return Ok(());
        }
        let ids: Vec<usize> = slots.iter().map(|&s| s as usize).collect();
        let mut rows = Vec::with_capacity(2 * layers);
        for l in 0..layers {
            let dev = self.k[l].device();
            rows.push(to_vec(self.k[l].clone().select(0, index::<B>(&ids, &dev)))?);
            rows.push(to_vec(self.v[l].clone().select(0, index::<B>(&ids, &dev)))?);
        }
        for i in 0..slots.len() {
            for r in &rows {
                for x in &r[i * width..(i + 1) * width] {
                    out.extend_from_slice(&x.to_le_bytes());
                }
            }
        }
        Ok(())
    }

    /// Stores `data` (as [`KvCache::read_bytes`] wrote it) into `slots`.
    pub fn write_bytes(&mut self, slots: &[u32], data: &[u8]) -> Result<()> {
        self.check_slots(slots)?;
        if data.len() != slots.len() * self.bytes_per_token() {
            return Err(ExecutorError::KvMismatch(
                "K/V bytes do not match the slots",
            ));
        }
        let (layers, width) = self.shape();
        let row = width * self.value_bytes();
        if let Some(h) = &mut self.host {
            let mut at = 0;
            for &s in slots {
                for l in 0..layers {
                    h.k[l].write_raw(s as usize * width, &data[at..at + row]);
                    h.v[l].write_raw(s as usize * width, &data[at + row..at + 2 * row]);
                    at += 2 * row;
                }
            }
            return Ok(());
        }
        let ids: Vec<usize> = slots.iter().map(|&s| s as usize).collect();
        let per_token = 2 * layers * row;
        for l in 0..layers {
            let gather = |which: usize| -> Vec<f32> {
                (0..slots.len())
                    .flat_map(|i| {
                        let at = i * per_token + (2 * l + which) * row;
                        data[at..at + row]
                            .chunks_exact(4)
                            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    })
                    .collect()
            };
            let dev = self.k[l].device();
            let (k, v) = (gather(0), gather(1));
            assign_rows(
                &mut self.k[l],
                index::<B>(&ids, &dev),
                tensor2(k, [ids.len(), width], &dev),
            );
            assign_rows(
                &mut self.v[l],
                index::<B>(&ids, &dev),
                tensor2(v, [ids.len(), width], &dev),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::RopeStyle;
    use crate::CpuBackend;

    fn config() -> LlamaConfig {
        LlamaConfig {
            vocab_size: 8,
            hidden_size: 8,
            intermediate_size: 8,
            num_layers: 2,
            num_heads: 2,
            num_kv_heads: 1,
            head_dim: 4,
            rms_eps: 1e-5,
            rope_theta: 10_000.0,
            max_position: 16,
            rope_style: RopeStyle::Neox,
            rope_scaling: Default::default(),
        }
    }

    /// Fills every slot of every layer with distinct values, as a forward would.
    fn fill(kv: &mut KvCache<CpuBackend>, slots: usize) {
        let width = 4;
        let per_token = kv.bytes_per_token();
        let mut all = Vec::new();
        for s in 0..slots {
            let mut token = Vec::new();
            for l in 0..2 {
                for which in 0..2 {
                    for i in 0..width {
                        let x = (s * 100 + l * 10 + which * 5 + i) as f32 * 0.25 - 7.0;
                        match kv.host.as_ref().map(|h| h.dtype) {
                            Some(KvDtype::F16) => {
                                token.extend_from_slice(&half::f16::from_f32(x).to_le_bytes())
                            }
                            Some(KvDtype::Bf16) => {
                                token.extend_from_slice(&half::bf16::from_f32(x).to_le_bytes())
                            }
                            _ => token.extend_from_slice(&x.to_le_bytes()),
                        }
                    }
                }
            }
            assert_eq!(token.len(), per_token);
            all.extend_from_slice(&token);
        }
        let ids: Vec<u32> = (0..slots as u32).collect();
        kv.write_bytes(&ids, &all).unwrap();
    }

    #[test]
    fn kv_bytes_round_trip_between_slots_in_every_pool_type() {
        let device = Default::default();
        let caches = [
            KvCache::<CpuBackend>::new(&config(), 6, &device),
            KvCache::new_host(&config(), 6, KvDtype::F32),
            KvCache::new_host(&config(), 6, KvDtype::F16),
            KvCache::new_host(&config(), 6, KvDtype::Bf16),
        ];
        for mut kv in caches {
            let value = if kv.is_host() {
                kv.host.as_ref().unwrap().dtype.bytes()
            } else {
                4
            };
            assert_eq!(kv.bytes_per_token(), 2 * 2 * 4 * value);
            fill(&mut kv, 6);
            let mut out = Vec::new();
            kv.read_bytes(&[1, 2, 3], &mut out).unwrap();
            // Copy slots 1..4 onto 5, 4, 0 (out of order) and read them back.
            kv.write_bytes(&[5, 4, 0], &out).unwrap();
            let mut back = Vec::new();
            kv.read_bytes(&[5, 4, 0], &mut back).unwrap();
            assert_eq!(back, out);
            assert_eq!(kv.read_k(0, &[5]).unwrap(), kv.read_k(0, &[1]).unwrap());
            // Wrong sizes and slots outside the pool are refused.
            assert!(kv.write_bytes(&[1], &out).is_err());
            assert!(kv.read_bytes(&[6], &mut Vec::new()).is_err());
        }
    }
}
