//! The block file: one block of K/V with everything needed to trust it.
//!
//! Layout, little-endian:
//!
//! | bytes | field |
//! | --- | --- |
//! | 4 | magic `RSKV` |
//! | 4 | format version |
//! | 32 | fingerprint of the model and cache layout |
//! | 16 | the block's key |
//! | 4 | tokens in the block (`n`) |
//! | 4 | K/V bytes per token (`b`) |
//! | 4n | the tokens |
//! | nb | the K/V, token by token in the executor's layout |
//! | 4 | CRC-32 of everything before it |
//!
//! Files are written under a temporary name and renamed into place, so a reader (or a restart
//! after `kill -9`) sees a whole file or none; the checksum catches the rest (a torn disk
//! write, bit rot, a file from elsewhere).

use super::keys::BlockKey;
use radix_tree::Token;
use std::io::Read;
use std::path::Path;

const MAGIC: &[u8; 4] = b"RSKV";
const VERSION: u32 = 1;
/// Bytes before the tokens.
pub(crate) const HEADER: usize = 4 + 4 + 32 + 16 + 4 + 4;

/// What a block file's header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub key: BlockKey,
    pub tokens: usize,
    pub bytes_per_token: usize,
}

impl Header {
    /// The length of the whole file this header describes.
    pub(crate) fn file_len(&self) -> u64 {
        (HEADER + 4 * self.tokens + self.tokens * self.bytes_per_token + 4) as u64
    }
}

/// Why a block file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BlockFault {
    #[error("not a block file of this format")]
    Format,
    #[error("written for another model or cache layout")]
    Fingerprint,
    #[error("its length does not match its header")]
    Length,
    #[error("checksum mismatch")]
    Checksum,
    #[error("it holds another block than its name says")]
    Key,
    #[error("its tokens differ from the prefix asked for")]
    Tokens,
}

/// The whole file for one block.
pub(crate) fn encode(
    fingerprint: &[u8; 32],
    key: BlockKey,
    tokens: &[Token],
    kv: &[u8],
) -> Vec<u8> {
    let bpt = kv.len() / tokens.len().max(1);
    let mut out = Vec::with_capacity(HEADER + 4 * tokens.len() + kv.len() + 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(fingerprint);
    out.extend_from_slice(&key.0);
    out.extend_from_slice(&(tokens.len() as u32).to_le_bytes());
    out.extend_from_slice(&(bpt as u32).to_le_bytes());
    for t in tokens {
        out.extend_from_slice(&t.to_le_bytes());
    }
    out.extend_from_slice(kv);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

/// Parses and checks a header (the first [`HEADER`] bytes).
pub(crate) fn parse_header(b: &[u8], fingerprint: &[u8; 32]) -> Result<Header, BlockFault> {
    if b.len() < HEADER || &b[..4] != MAGIC || u32_at(b, 4) != VERSION {
        return Err(BlockFault::Format);
    }
    if &b[8..40] != fingerprint {
        return Err(BlockFault::Fingerprint);
    }
    let mut key = [0u8; 16];
    key.copy_from_slice(&b[40..56]);
    Ok(Header {
        key: BlockKey(key),
        tokens: u32_at(b, 56) as usize,
        bytes_per_token: u32_at(b, 60) as usize,
    })
}

/// Reads just the header of the file at `path` and checks it against the file's length.
pub(crate) fn read_header(
    path: &Path,
    fingerprint: &[u8; 32],
) -> std::io::Result<Result<Header, BlockFault>> {
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let mut head = [0u8; HEADER];
    if len < HEADER as u64 {
        return Ok(Err(BlockFault::Length));
    }
    f.read_exact(&mut head)?;
    Ok(parse_header(&head, fingerprint).and_then(|h| {
        if h.file_len() == len {
            Ok(h)
        } else {
            Err(BlockFault::Length)
        }
    }))
}

/// Checks a whole file against what the caller expects and returns its K/V bytes.
pub(crate) fn decode<'a>(
    b: &'a [u8],
    fingerprint: &[u8; 32],
    key: BlockKey,
    tokens: &[Token],
    bytes_per_token: usize,
) -> Result<&'a [u8], BlockFault> {
    let h = parse_header(b, fingerprint)?;
    if h.file_len() != b.len() as u64 {
        return Err(BlockFault::Length);
    }
    let body = b.len() - 4;
    if crc32fast::hash(&b[..body]) != u32_at(b, body) {
        return Err(BlockFault::Checksum);
    }
    if h.key != key {
        return Err(BlockFault::Key);
    }
    if h.tokens != tokens.len() || h.bytes_per_token != bytes_per_token {
        return Err(BlockFault::Length);
    }
    let stored = b[HEADER..HEADER + 4 * h.tokens]
        .chunks_exact(4)
        .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]));
    if !stored.eq(tokens.iter().copied()) {
        return Err(BlockFault::Tokens);
    }
    Ok(&b[HEADER + 4 * h.tokens..body])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_round_trips_and_every_fault_is_caught() {
        let fp = [3u8; 32];
        let key = BlockKey([9; 16]);
        let tokens = [5, 6];
        let kv = [1u8, 2, 3, 4, 5, 6];
        let file = encode(&fp, key, &tokens, &kv);
        assert_eq!(decode(&file, &fp, key, &tokens, 3), Ok(&kv[..]));
        assert_eq!(
            decode(&file, &[4; 32], key, &tokens, 3),
            Err(BlockFault::Fingerprint)
        );
        assert_eq!(
            decode(&file, &fp, BlockKey([1; 16]), &tokens, 3),
            Err(BlockFault::Key)
        );
        assert_eq!(decode(&file, &fp, key, &[5, 7], 3), Err(BlockFault::Tokens));
        assert_eq!(
            decode(&file[..file.len() - 1], &fp, key, &tokens, 3),
            Err(BlockFault::Length)
        );
        for i in [0, 9, HEADER + 1, file.len() - 5, file.len() - 1] {
            let mut bad = file.clone();
            bad[i] ^= 0x40;
            assert!(
                decode(&bad, &fp, key, &tokens, 3).is_err(),
                "flipped byte {i}"
            );
        }
    }
}
