//! A small GGUF (v2/v3) reader: metadata, tensor infos and dequantisation to f32.
//!
//! The whole file is read into memory (no `unsafe` mmap); tensors are dequantised on request
//! ([`dequant`]). [`writer`] builds GGUF images in memory for tests (feature `testing`).

mod dequant;
#[cfg(test)]
mod tests;
#[cfg(any(test, feature = "testing"))]
pub mod writer;

pub use dequant::dequantize_into;
pub(crate) use dequant::{f16_at, q3k_scale, q4k_scale_min, IQ4NL_VALUES};

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{ExecutorError, Result};

/// The GGUF magic, "GGUF" read as a little-endian u32.
pub const GGUF_MAGIC: u32 = 0x4655_4747;
/// Alignment of the tensor data section when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: usize = 32;

/// One GGUF metadata value (all value types of the format, arrays included).
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    /// Type 0.
    U8(u8),
    /// Type 1.
    I8(i8),
    /// Type 2.
    U16(u16),
    /// Type 3.
    I16(i16),
    /// Type 4.
    U32(u32),
    /// Type 5.
    I32(i32),
    /// Type 6.
    F32(f32),
    /// Type 7.
    Bool(bool),
    /// Type 8.
    String(String),
    /// Type 9 (elements all of one type).
    Array(Vec<GgufValue>),
    /// Type 10.
    U64(u64),
    /// Type 11.
    I64(i64),
    /// Type 12.
    F64(f64),
}

impl GgufValue {
    /// The value as an unsigned integer, if it is a non-negative integer of any width.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::U8(v) => Some(v.into()),
            GgufValue::U16(v) => Some(v.into()),
            GgufValue::U32(v) => Some(v.into()),
            GgufValue::U64(v) => Some(v),
            GgufValue::I8(v) => u64::try_from(v).ok(),
            GgufValue::I16(v) => u64::try_from(v).ok(),
            GgufValue::I32(v) => u64::try_from(v).ok(),
            GgufValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a float, if it is numeric.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F32(v) => Some(v.into()),
            GgufValue::F64(v) => Some(v),
            GgufValue::I8(v) => Some(v.into()),
            GgufValue::I16(v) => Some(v.into()),
            GgufValue::I32(v) => Some(v.into()),
            GgufValue::I64(v) => Some(v as f64),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    /// The value as a string slice, if it is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value as a bool, if it is a bool.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            GgufValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The value as an array slice, if it is an array.
    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            GgufValue::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// ggml tensor element types this reader knows (others are reported by raw id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    /// 32-bit float.
    F32,
    /// IEEE half.
    F16,
    /// bfloat16.
    BF16,
    /// 32 values: f16 scale + 32 x 4-bit (offset 8).
    Q4_0,
    /// 32 values: f16 scale, f16 min + 32 x 4-bit.
    Q4_1,
    /// 32 values: f16 scale + 32 x 5-bit (offset 16; the fifth bits packed in a u32).
    Q5_0,
    /// 32 values: f16 scale, f16 min + 32 x 5-bit.
    Q5_1,
    /// 32 values: f16 scale + 32 x i8.
    Q8_0,
    /// 256-value super-block of 2-bit values with 4-bit sub-block scales and mins.
    Q2K,
    /// 256-value super-block of 3-bit values (high bits in a mask) with 6-bit scales.
    Q3K,
    /// 256-value super-block with 6-bit sub-block scales and mins.
    Q4K,
    /// 256-value super-block of 5-bit values with 6-bit sub-block scales and mins.
    Q5K,
    /// 256-value super-block of 6-bit values with i8 sub-block scales.
    Q6K,
    /// 32 values: f16 scale + 32 x 4-bit indices into a fixed non-linear table.
    IQ4NL,
    /// Any other ggml type id (not dequantisable here).
    Other(u32),
}

impl GgmlType {
    /// Maps a raw ggml type id.
    pub fn from_id(id: u32) -> Self {
        match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            6 => GgmlType::Q5_0,
            7 => GgmlType::Q5_1,
            8 => GgmlType::Q8_0,
            10 => GgmlType::Q2K,
            11 => GgmlType::Q3K,
            12 => GgmlType::Q4K,
            13 => GgmlType::Q5K,
            14 => GgmlType::Q6K,
            20 => GgmlType::IQ4NL,
            30 => GgmlType::BF16,
            other => GgmlType::Other(other),
        }
    }

    /// (values per block, bytes per block), or None for unsupported types.
    pub fn block_layout(self) -> Option<(usize, usize)> {
        match self {
            GgmlType::F32 => Some((1, 4)),
            GgmlType::F16 | GgmlType::BF16 => Some((1, 2)),
            GgmlType::Q4_0 => Some((32, 18)),
            GgmlType::Q4_1 => Some((32, 20)),
            GgmlType::Q5_0 => Some((32, 22)),
            GgmlType::Q5_1 => Some((32, 24)),
            GgmlType::Q8_0 => Some((32, 34)),
            GgmlType::Q2K => Some((256, 84)),
            GgmlType::Q3K => Some((256, 110)),
            GgmlType::Q4K => Some((256, 144)),
            GgmlType::Q5K => Some((256, 176)),
            GgmlType::Q6K => Some((256, 210)),
            GgmlType::IQ4NL => Some((32, 18)),
            GgmlType::Other(_) => None,
        }
    }

    /// Human-readable name (ggml spelling).
    pub fn name(self) -> String {
        match self {
            GgmlType::F32 => "F32".into(),
            GgmlType::F16 => "F16".into(),
            GgmlType::BF16 => "BF16".into(),
            GgmlType::Q4_0 => "Q4_0".into(),
            GgmlType::Q4_1 => "Q4_1".into(),
            GgmlType::Q5_0 => "Q5_0".into(),
            GgmlType::Q5_1 => "Q5_1".into(),
            GgmlType::Q8_0 => "Q8_0".into(),
            GgmlType::Q2K => "Q2_K".into(),
            GgmlType::Q3K => "Q3_K".into(),
            GgmlType::Q4K => "Q4_K".into(),
            GgmlType::Q5K => "Q5_K".into(),
            GgmlType::Q6K => "Q6_K".into(),
            GgmlType::IQ4NL => "IQ4_NL".into(),
            GgmlType::Other(id) => format!("ggml type id {id}"),
        }
    }
}

/// Where one tensor lives in the file.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    /// Tensor name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// ggml dims: `dims[0]` is the contiguous (fastest) axis.
    pub dims: Vec<usize>,
    /// Element type.
    pub ty: GgmlType,
    /// Offset relative to the start of the data section.
    pub offset: usize,
}

impl TensorInfo {
    /// Number of elements.
    pub fn n_elements(&self) -> usize {
        self.dims.iter().product()
    }

    /// Row-major shape (outermost first), i.e. the reversed ggml dims.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().copied().collect()
    }
}

/// A parsed GGUF file held in memory.
#[derive(Debug)]
pub struct GgufFile {
    /// Format version (2 or 3).
    pub version: u32,
    /// All metadata key/value pairs.
    pub metadata: BTreeMap<String, GgufValue>,
    /// Tensor infos in file order.
    pub tensors: Vec<TensorInfo>,
    data: Vec<u8>,
    data_start: usize,
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        match end {
            Some(end) => {
                let s = &self.buf[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(ExecutorError::Truncated {
                what: what.to_string(),
                offset: self.pos,
                needed: n,
                len: self.buf.len(),
            }),
        }
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn len(&mut self, what: &str) -> Result<usize> {
        let v = self.u64(what)?;
        let n = usize::try_from(v)
            .map_err(|_| ExecutorError::Malformed(format!("{what}: length {v} too large")))?;
        // Every element takes at least one byte: a count beyond the file is certainly corrupt.
        if n > self.buf.len() {
            return Err(ExecutorError::Truncated {
                what: what.to_string(),
                offset: self.pos,
                needed: n,
                len: self.buf.len(),
            });
        }
        Ok(n)
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.len(what)?;
        let bytes = self.take(n, what)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| ExecutorError::Malformed(format!("{what}: invalid UTF-8")))
    }

    fn value(&mut self, ty: u32, what: &str, depth: usize) -> Result<GgufValue> {
        Ok(match ty {
            0 => GgufValue::U8(self.array::<1>(what)?[0]),
            1 => GgufValue::I8(i8::from_le_bytes(self.array(what)?)),
            2 => GgufValue::U16(u16::from_le_bytes(self.array(what)?)),
            3 => GgufValue::I16(i16::from_le_bytes(self.array(what)?)),
            4 => GgufValue::U32(self.u32(what)?),
            5 => GgufValue::I32(i32::from_le_bytes(self.array(what)?)),
            6 => GgufValue::F32(f32::from_le_bytes(self.array(what)?)),
            7 => match self.array::<1>(what)?[0] {
                0 => GgufValue::Bool(false),
                1 => GgufValue::Bool(true),
                b => return Err(ExecutorError::Malformed(format!("{what}: bool byte {b}"))),
            },
            8 => GgufValue::String(self.string(what)?),
            9 => {
                if depth > 4 {
                    return Err(ExecutorError::Malformed(format!(
                        "{what}: arrays nested too deep"
                    )));
                }
                let elem_ty = self.u32(what)?;
                let n = self.len(what)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(elem_ty, what, depth + 1)?);
                }
                GgufValue::Array(items)
            }
            10 => GgufValue::U64(self.u64(what)?),
            11 => GgufValue::I64(i64::from_le_bytes(self.array(what)?)),
            12 => GgufValue::F64(f64::from_le_bytes(self.array(what)?)),
            other => {
                return Err(ExecutorError::Malformed(format!(
                    "{what}: unknown metadata value type {other}"
                )))
            }
        })
    }
}

impl GgufFile {
    /// Reads and parses a GGUF file from disk.
    pub fn open(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Err(ExecutorError::NotFound(path.to_path_buf()));
        }
        let data = std::fs::read(path).map_err(|source| ExecutorError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(data)
    }

    /// Parses a GGUF image held in memory.
    pub fn parse(data: Vec<u8>) -> Result<Self> {
        let mut c = Cursor { buf: &data, pos: 0 };
        let magic = c.u32("magic")?;
        if magic != GGUF_MAGIC {
            return Err(ExecutorError::BadMagic(magic));
        }
        let version = c.u32("version")?;
        if version != 2 && version != 3 {
            return Err(ExecutorError::UnsupportedVersion(version));
        }
        let n_tensors = c.len("tensor count")?;
        let n_kv = c.len("metadata count")?;
        let mut metadata = BTreeMap::new();
        for _ in 0..n_kv {
            let key = c.string("metadata key")?;
            let ty = c.u32(&key)?;
            let value = c.value(ty, &key, 0)?;
            metadata.insert(key, value);
        }
        let mut tensors = Vec::with_capacity(n_tensors);
        for _ in 0..n_tensors {
            let name = c.string("tensor name")?;
            let n_dims = c.u32(&name)? as usize;
            if n_dims > 4 {
                return Err(ExecutorError::Malformed(format!(
                    "tensor {name}: {n_dims} dims"
                )));
            }
            let mut dims = Vec::with_capacity(n_dims);
            for _ in 0..n_dims {
                let d = c.u64(&name)?;
                dims.push(usize::try_from(d).map_err(|_| {
                    ExecutorError::Malformed(format!("tensor {name}: dim {d} too large"))
                })?);
            }
            let ty = GgmlType::from_id(c.u32(&name)?);
            let off = c.u64(&name)?;
            let offset = usize::try_from(off)
                .map_err(|_| ExecutorError::Malformed(format!("tensor {name}: offset {off}")))?;
            tensors.push(TensorInfo {
                name,
                dims,
                ty,
                offset,
            });
        }
        let alignment = metadata
            .get("general.alignment")
            .and_then(GgufValue::as_u64)
            .map_or(DEFAULT_ALIGNMENT, |a| a as usize);
        if alignment == 0 {
            return Err(ExecutorError::Malformed("general.alignment is 0".into()));
        }
        let data_start = c.pos.div_ceil(alignment) * alignment;
        let file = GgufFile {
            version,
            metadata,
            tensors,
            data,
            data_start,
        };
        // Validate every supported tensor's extent now so later reads cannot go out of bounds.
        for t in &file.tensors {
            if let Some(n) = file.byte_len(t) {
                let start = file.data_start.saturating_add(t.offset);
                if start.saturating_add(n) > file.data.len() {
                    return Err(ExecutorError::Truncated {
                        what: format!("tensor {} data", t.name),
                        offset: start,
                        needed: n,
                        len: file.data.len(),
                    });
                }
            }
        }
        Ok(file)
    }

    fn byte_len(&self, t: &TensorInfo) -> Option<usize> {
        let (per, bytes) = t.ty.block_layout()?;
        let n = t.n_elements();
        Some(n.div_ceil(per) * bytes)
    }

    /// Metadata value by key.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.get(key)
    }

    /// Required unsigned integer metadata.
    pub fn get_u64(&self, key: &str) -> Result<u64> {
        let v = self.get(key).ok_or_else(|| ExecutorError::Metadata {
            key: key.into(),
            problem: "missing".into(),
        })?;
        v.as_u64().ok_or_else(|| ExecutorError::Metadata {
            key: key.into(),
            problem: format!("expected an unsigned integer, found {v:?}"),
        })
    }

    /// Required float metadata.
    pub fn get_f64(&self, key: &str) -> Result<f64> {
        let v = self.get(key).ok_or_else(|| ExecutorError::Metadata {
            key: key.into(),
            problem: "missing".into(),
        })?;
        v.as_f64().ok_or_else(|| ExecutorError::Metadata {
            key: key.into(),
            problem: format!("expected a number, found {v:?}"),
        })
    }

    /// Required string metadata.
    pub fn get_str(&self, key: &str) -> Result<&str> {
        let v = self.get(key).ok_or_else(|| ExecutorError::Metadata {
            key: key.into(),
            problem: "missing".into(),
        })?;
        v.as_str().ok_or_else(|| ExecutorError::Metadata {
            key: key.into(),
            problem: "expected a string".into(),
        })
    }

    /// Required array-of-strings metadata.
    pub fn get_str_array(&self, key: &str) -> Result<Vec<&str>> {
        let v = self.get(key).ok_or_else(|| ExecutorError::Metadata {
            key: key.into(),
            problem: "missing".into(),
        })?;
        let arr = v.as_array().ok_or_else(|| ExecutorError::Metadata {
            key: key.into(),
            problem: "expected an array".into(),
        })?;
        arr.iter()
            .map(|x| {
                x.as_str().ok_or_else(|| ExecutorError::Metadata {
                    key: key.into(),
                    problem: "expected an array of strings".into(),
                })
            })
            .collect()
    }

    /// Tensor info by name.
    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Raw bytes of a tensor.
    pub fn tensor_bytes(&self, name: &str) -> Result<(&TensorInfo, &[u8])> {
        let t = self
            .tensor_info(name)
            .ok_or_else(|| ExecutorError::MissingTensor(name.into()))?;
        let n = self
            .byte_len(t)
            .ok_or_else(|| ExecutorError::UnsupportedTensorType {
                name: name.into(),
                ty: t.ty.name(),
            })?;
        let start = self.data_start + t.offset;
        // Extent validated in `parse`.
        Ok((t, &self.data[start..start + n]))
    }

    /// Dequantises a tensor to f32 in ggml order (row-major over the reversed dims).
    pub fn dequantize(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let (t, bytes) = self.tensor_bytes(name)?;
        let n = t.n_elements();
        let (per, _) = t.ty.block_layout().unwrap_or((1, 1));
        if !n.is_multiple_of(per) {
            return Err(ExecutorError::Malformed(format!(
                "tensor {name}: {n} elements is not a multiple of the {} block size {per}",
                t.ty.name()
            )));
        }
        let mut out = vec![0f32; n];
        dequantize_into(t.ty, bytes, &mut out).map_err(|ty| {
            ExecutorError::UnsupportedTensorType {
                name: name.into(),
                ty,
            }
        })?;
        Ok((t.shape(), out))
    }
}
