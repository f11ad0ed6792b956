//! A small GGUF (v2/v3) reader: metadata, tensor infos and dequantisation to f32.
//!
//! The whole file is read into memory (no `unsafe` mmap); tensors are dequantised on request.

use std::collections::BTreeMap;
use std::path::Path;

use half::{bf16, f16};

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
    /// 32 values: f16 scale + 32 x i8.
    Q8_0,
    /// 256-value super-block with 6-bit sub-block scales and mins.
    Q4K,
    /// 256-value super-block of 6-bit values with i8 sub-block scales.
    Q6K,
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
            8 => GgmlType::Q8_0,
            12 => GgmlType::Q4K,
            14 => GgmlType::Q6K,
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
            GgmlType::Q8_0 => Some((32, 34)),
            GgmlType::Q4K => Some((256, 144)),
            GgmlType::Q6K => Some((256, 210)),
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
            GgmlType::Q8_0 => "Q8_0".into(),
            GgmlType::Q4K => "Q4_K".into(),
            GgmlType::Q6K => "Q6_K".into(),
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

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Dequantises `bytes` of type `ty` into `out` (its length decides how many values).
/// Returns the type name as the error when the type is unsupported.
pub fn dequantize_into(
    ty: GgmlType,
    bytes: &[u8],
    out: &mut [f32],
) -> std::result::Result<(), String> {
    let (per, bsz) = ty.block_layout().ok_or_else(|| ty.name())?;
    let blocks = out.len() / per;
    if bytes.len() < blocks * bsz || !out.len().is_multiple_of(per) {
        return Err(format!("{} (byte length mismatch)", ty.name()));
    }
    for (bi, y) in out.chunks_exact_mut(per).enumerate() {
        let b = &bytes[bi * bsz..(bi + 1) * bsz];
        match ty {
            GgmlType::F32 => y[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            GgmlType::F16 => y[0] = f16_at(b, 0),
            GgmlType::BF16 => y[0] = bf16::from_le_bytes([b[0], b[1]]).to_f32(),
            GgmlType::Q4_0 => {
                let d = f16_at(b, 0);
                for j in 0..16 {
                    let q = b[2 + j];
                    y[j] = ((q & 0x0f) as i32 - 8) as f32 * d;
                    y[j + 16] = ((q >> 4) as i32 - 8) as f32 * d;
                }
            }
            GgmlType::Q4_1 => {
                let d = f16_at(b, 0);
                let m = f16_at(b, 2);
                for j in 0..16 {
                    let q = b[4 + j];
                    y[j] = (q & 0x0f) as f32 * d + m;
                    y[j + 16] = (q >> 4) as f32 * d + m;
                }
            }
            GgmlType::Q8_0 => {
                let d = f16_at(b, 0);
                for j in 0..32 {
                    y[j] = (b[2 + j] as i8) as f32 * d;
                }
            }
            GgmlType::Q4K => dequant_q4k(b, y),
            GgmlType::Q6K => dequant_q6k(b, y),
            GgmlType::Other(_) => return Err(ty.name()),
        }
    }
    Ok(())
}

/// Scale and min of sub-block `j` (0..8) of a Q4_K block's 12 packed scale bytes.
fn q4k_scale_min(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

fn dequant_q4k(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let dmin = f16_at(b, 2);
    let scales = &b[4..16];
    let qs = &b[16..144];
    for chunk in 0..4 {
        let q = &qs[chunk * 32..chunk * 32 + 32];
        let (sc1, m1) = q4k_scale_min(2 * chunk, scales);
        let (sc2, m2) = q4k_scale_min(2 * chunk + 1, scales);
        let (d1, mm1) = (d * sc1 as f32, dmin * m1 as f32);
        let (d2, mm2) = (d * sc2 as f32, dmin * m2 as f32);
        let base = chunk * 64;
        for l in 0..32 {
            y[base + l] = d1 * (q[l] & 0x0f) as f32 - mm1;
            y[base + 32 + l] = d2 * (q[l] >> 4) as f32 - mm2;
        }
    }
}

fn dequant_q6k(b: &[u8], y: &mut [f32]) {
    let ql_all = &b[0..128];
    let qh_all = &b[128..192];
    let sc_all = &b[192..208];
    let d = f16_at(b, 208);
    for half_i in 0..2 {
        let ql = &ql_all[half_i * 64..];
        let qh = &qh_all[half_i * 32..];
        let sc = &sc_all[half_i * 8..];
        let yb = &mut y[half_i * 128..];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0x0f) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            yb[l] = d * (sc[is] as i8) as f32 * q1 as f32;
            yb[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
            yb[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
            yb[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
        }
    }
}

/// Builders of GGUF images in memory, for tests of this crate and its users.
pub mod writer {
    use super::GgufValue;

    fn put_str(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }

    fn type_id(v: &GgufValue) -> u32 {
        match v {
            GgufValue::U8(_) => 0,
            GgufValue::I8(_) => 1,
            GgufValue::U16(_) => 2,
            GgufValue::I16(_) => 3,
            GgufValue::U32(_) => 4,
            GgufValue::I32(_) => 5,
            GgufValue::F32(_) => 6,
            GgufValue::Bool(_) => 7,
            GgufValue::String(_) => 8,
            GgufValue::Array(_) => 9,
            GgufValue::U64(_) => 10,
            GgufValue::I64(_) => 11,
            GgufValue::F64(_) => 12,
        }
    }

    fn put_value(out: &mut Vec<u8>, v: &GgufValue) {
        match v {
            GgufValue::U8(x) => out.push(*x),
            GgufValue::I8(x) => out.extend_from_slice(&x.to_le_bytes()),
            GgufValue::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
            GgufValue::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
            GgufValue::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
            GgufValue::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
            GgufValue::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
            GgufValue::Bool(x) => out.push(u8::from(*x)),
            GgufValue::String(s) => put_str(out, s),
            GgufValue::Array(items) => {
                let elem = items.first().map_or(4, type_id);
                out.extend_from_slice(&elem.to_le_bytes());
                out.extend_from_slice(&(items.len() as u64).to_le_bytes());
                for i in items {
                    put_value(out, i);
                }
            }
            GgufValue::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
            GgufValue::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
            GgufValue::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        }
    }

    /// A tensor to write: name, ggml dims (contiguous axis first), ggml type id, raw bytes.
    pub struct RawTensor {
        /// Tensor name.
        pub name: String,
        /// ggml dims.
        pub dims: Vec<u64>,
        /// ggml type id.
        pub type_id: u32,
        /// Raw block bytes.
        pub bytes: Vec<u8>,
    }

    /// Serialises a GGUF v3 image with alignment 32.
    pub fn build(metadata: &[(&str, GgufValue)], tensors: &[RawTensor]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&super::GGUF_MAGIC.to_le_bytes());
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
        for (k, v) in metadata {
            put_str(&mut out, k);
            out.extend_from_slice(&type_id(v).to_le_bytes());
            put_value(&mut out, v);
        }
        let mut offset = 0u64;
        let mut offsets = Vec::new();
        for t in tensors {
            put_str(&mut out, &t.name);
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&t.type_id.to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            offsets.push(offset);
            offset += (t.bytes.len() as u64).div_ceil(32) * 32;
        }
        while out.len() % 32 != 0 {
            out.push(0);
        }
        let data_start = out.len();
        for (t, off) in tensors.iter().zip(offsets) {
            out.resize(data_start + off as usize, 0);
            out.extend_from_slice(&t.bytes);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::writer::{build, RawTensor};
    use super::*;

    fn h(x: f32) -> [u8; 2] {
        f16::from_f32(x).to_le_bytes()
    }

    fn deq(ty: GgmlType, bytes: &[u8], n: usize) -> Vec<f32> {
        let mut out = vec![0f32; n];
        dequantize_into(ty, bytes, &mut out).expect("supported");
        out
    }

    #[test]
    fn f32_f16_bf16_values_round_trip() {
        let vals = [1.5f32, -2.25, 0.0, 1024.0];
        let b32: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(deq(GgmlType::F32, &b32, 4), vals);
        let b16: Vec<u8> = vals.iter().flat_map(|v| h(*v)).collect();
        assert_eq!(deq(GgmlType::F16, &b16, 4), vals);
        let bb: Vec<u8> = vals
            .iter()
            .flat_map(|v| bf16::from_f32(*v).to_le_bytes())
            .collect();
        assert_eq!(deq(GgmlType::BF16, &bb, 4), vals);
    }

    #[test]
    fn q8_0_block_is_scale_times_int8() {
        let mut b = h(0.5).to_vec();
        let qs: Vec<i8> = (0..32).map(|i| (i as i8) * 4 - 64).collect();
        b.extend(qs.iter().map(|&q| q as u8));
        let y = deq(GgmlType::Q8_0, &b, 32);
        assert_eq!(y[0], -32.0);
        assert_eq!(y[1], -30.0);
        assert_eq!(y[31], (31.0 * 4.0 - 64.0) * 0.5);
    }

    #[test]
    fn q4_0_block_low_nibbles_first_offset_eight() {
        let mut b = h(2.0).to_vec();
        // byte j: low nibble j%16, high nibble 15 - j%16
        for j in 0..16u8 {
            b.push(j | ((15 - j) << 4));
        }
        let y = deq(GgmlType::Q4_0, &b, 32);
        assert_eq!(y[0], (0.0 - 8.0) * 2.0);
        assert_eq!(y[15], (15.0 - 8.0) * 2.0);
        assert_eq!(y[16], (15.0 - 8.0) * 2.0);
        assert_eq!(y[31], (0.0 - 8.0) * 2.0);
    }

    #[test]
    fn q4_1_block_is_scale_times_nibble_plus_min() {
        let mut b = h(0.25).to_vec();
        b.extend_from_slice(&h(-1.0));
        for j in 0..16u8 {
            b.push(3 | (j << 4));
        }
        let y = deq(GgmlType::Q4_1, &b, 32);
        assert_eq!(y[0], 3.0 * 0.25 - 1.0);
        assert_eq!(y[7], 3.0 * 0.25 - 1.0);
        assert_eq!(y[16], -1.0);
        assert_eq!(y[31], 15.0 * 0.25 - 1.0);
    }

    #[test]
    fn q4_k_block_uses_packed_six_bit_scales_and_mins() {
        // d = 1, dmin = 0.5. Sub-block scales sc[j] = j + 1, mins m[j] = 2j,
        // packed as ggml does: j < 4 in the low 6 bits of bytes j / j+4,
        // j >= 4 split: low 4 bits in byte j+4, high 2 bits in the top of bytes j-4 / j.
        let sc: [u8; 8] = [1, 2, 3, 4, 5, 6, 7, 40];
        let mn: [u8; 8] = [0, 2, 4, 6, 8, 10, 12, 50];
        let mut s = [0u8; 12];
        for j in 0..4 {
            s[j] = sc[j] | ((sc[j + 4] >> 4) << 6);
            s[j + 4] = mn[j] | ((mn[j + 4] >> 4) << 6);
            s[j + 8] = (sc[j + 4] & 0x0f) | ((mn[j + 4] & 0x0f) << 4);
        }
        let mut b = h(1.0).to_vec();
        b.extend_from_slice(&h(0.5));
        b.extend_from_slice(&s);
        // qs: 4 chunks of 32 bytes; byte l of chunk c: low nibble (l % 16), high nibble c + 1.
        for c in 0..4u8 {
            for l in 0..32u8 {
                b.push((l % 16) | ((c + 1) << 4));
            }
        }
        assert_eq!(b.len(), 144);
        let y = deq(GgmlType::Q4K, &b, 256);
        for c in 0..4usize {
            for l in 0..32usize {
                let lo_sub = 2 * c;
                let hi_sub = 2 * c + 1;
                let lo = sc[lo_sub] as f32 * (l % 16) as f32 - 0.5 * mn[lo_sub] as f32;
                let hi = sc[hi_sub] as f32 * (c + 1) as f32 - 0.5 * mn[hi_sub] as f32;
                assert_eq!(y[c * 64 + l], lo, "c{c} l{l} low");
                assert_eq!(y[c * 64 + 32 + l], hi, "c{c} l{l} high");
            }
        }
    }

    #[test]
    fn q6_k_block_combines_low_and_high_bits_with_int8_scales() {
        // Choose a 6-bit value per element v(i) = i % 64, then pack as ggml does.
        let v = |i: usize| (i * 7 % 64) as u8;
        let mut ql = [0u8; 128];
        let mut qh = [0u8; 64];
        for half_i in 0..2 {
            for l in 0..32 {
                let base = half_i * 128;
                let (q1, q2, q3, q4) = (
                    v(base + l),
                    v(base + l + 32),
                    v(base + l + 64),
                    v(base + l + 96),
                );
                ql[half_i * 64 + l] = (q1 & 0x0f) | ((q3 & 0x0f) << 4);
                ql[half_i * 64 + l + 32] = (q2 & 0x0f) | ((q4 & 0x0f) << 4);
                qh[half_i * 32 + l] =
                    (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
            }
        }
        let scales: [i8; 16] = [
            1, -2, 3, -4, 5, -6, 7, -8, 9, -10, 11, -12, 13, -14, 15, -16,
        ];
        let mut b = ql.to_vec();
        b.extend_from_slice(&qh);
        b.extend(scales.iter().map(|&s| s as u8));
        b.extend_from_slice(&h(0.125));
        assert_eq!(b.len(), 210);
        let y = deq(GgmlType::Q6K, &b, 256);
        for (i, &got) in y.iter().enumerate() {
            // 16 sub-blocks of 16 consecutive values each.
            let expected = 0.125 * scales[i / 16] as f32 * (v(i) as f32 - 32.0);
            assert_eq!(got, expected, "element {i}");
        }
    }

    fn sample_image() -> Vec<u8> {
        let meta = [
            ("general.architecture", GgufValue::String("llama".into())),
            ("a.u8", GgufValue::U8(7)),
            ("a.i8", GgufValue::I8(-7)),
            ("a.u16", GgufValue::U16(700)),
            ("a.i16", GgufValue::I16(-700)),
            ("a.u32", GgufValue::U32(70_000)),
            ("a.i32", GgufValue::I32(-70_000)),
            ("a.f32", GgufValue::F32(1.5)),
            ("a.bool", GgufValue::Bool(true)),
            ("a.u64", GgufValue::U64(1 << 40)),
            ("a.i64", GgufValue::I64(-(1 << 40))),
            ("a.f64", GgufValue::F64(2.5)),
            (
                "a.arr",
                GgufValue::Array(vec![
                    GgufValue::String("x".into()),
                    GgufValue::String("yz".into()),
                ]),
            ),
            (
                "a.nested",
                GgufValue::Array(vec![GgufValue::Array(vec![GgufValue::I32(1)])]),
            ),
        ];
        let t = RawTensor {
            name: "w".into(),
            dims: vec![2, 3],
            type_id: 0,
            bytes: (0..6).flat_map(|i| (i as f32).to_le_bytes()).collect(),
        };
        build(&meta, &[t])
    }

    #[test]
    fn parses_every_metadata_type_and_tensor_infos() {
        let f = GgufFile::parse(sample_image()).expect("valid image");
        assert_eq!(f.version, 3);
        assert_eq!(f.get_str("general.architecture").expect("arch"), "llama");
        assert_eq!(f.get("a.u8"), Some(&GgufValue::U8(7)));
        assert_eq!(f.get("a.i8"), Some(&GgufValue::I8(-7)));
        assert_eq!(f.get("a.u16"), Some(&GgufValue::U16(700)));
        assert_eq!(f.get("a.i16"), Some(&GgufValue::I16(-700)));
        assert_eq!(f.get_u64("a.u32").expect("u32"), 70_000);
        assert_eq!(f.get("a.i32"), Some(&GgufValue::I32(-70_000)));
        assert_eq!(f.get_f64("a.f32").expect("f32"), 1.5);
        assert_eq!(f.get("a.bool").and_then(GgufValue::as_bool), Some(true));
        assert_eq!(f.get_u64("a.u64").expect("u64"), 1 << 40);
        assert_eq!(f.get("a.i64"), Some(&GgufValue::I64(-(1 << 40))));
        assert_eq!(f.get_f64("a.f64").expect("f64"), 2.5);
        assert_eq!(f.get_str_array("a.arr").expect("arr"), vec!["x", "yz"]);
        assert!(f.get("a.nested").and_then(GgufValue::as_array).is_some());
        let (shape, data) = f.dequantize("w").expect("tensor");
        assert_eq!(shape, vec![3, 2]);
        assert_eq!(data, vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        assert!(matches!(
            f.get_u64("missing"),
            Err(ExecutorError::Metadata { .. })
        ));
        assert!(matches!(
            f.dequantize("nope"),
            Err(ExecutorError::MissingTensor(_))
        ));
    }

    #[test]
    fn bad_magic_is_reported() {
        let mut img = sample_image();
        img[0] = b'X';
        let err = GgufFile::parse(img).expect_err("bad magic");
        assert!(matches!(err, ExecutorError::BadMagic(_)), "{err}");
        assert!(err.to_string().contains("not a GGUF file"));
    }

    #[test]
    fn unsupported_version_is_reported() {
        let mut img = sample_image();
        img[4..8].copy_from_slice(&1u32.to_le_bytes());
        let err = GgufFile::parse(img).expect_err("v1");
        assert!(matches!(err, ExecutorError::UnsupportedVersion(1)), "{err}");
    }

    #[test]
    fn truncation_anywhere_is_a_typed_error_not_a_panic() {
        let img = sample_image();
        for cut in [3, 10, 30, 100, img.len() - 1] {
            let err = GgufFile::parse(img[..cut].to_vec()).expect_err("truncated");
            assert!(
                matches!(err, ExecutorError::Truncated { .. }),
                "cut {cut}: {err}"
            );
        }
    }

    #[test]
    fn unsupported_tensor_type_is_reported_on_dequantize() {
        let t = RawTensor {
            name: "q5".into(),
            dims: vec![32],
            type_id: 6,
            bytes: vec![0; 22],
        };
        let f = GgufFile::parse(build(&[], &[t])).expect("parses");
        let err = f.dequantize("q5").expect_err("unsupported");
        assert!(
            matches!(err, ExecutorError::UnsupportedTensorType { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("q5"));
    }

    #[test]
    fn missing_file_is_not_found() {
        let err = GgufFile::open(Path::new("/definitely/not/here.gguf")).expect_err("missing");
        assert!(matches!(err, ExecutorError::NotFound(_)), "{err}");
    }
}
