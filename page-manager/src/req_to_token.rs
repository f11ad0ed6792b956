//! The request-to-token table: one row of slot ids per running request.

use crate::error::KvError;
use crate::Slot;

/// A row of the request-to-token table (one per admitted request).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RowId(pub u32);

/// SGLang's `ReqToTokenPool`: a fixed `rows x max_context` table of slot ids. Row `r`, position
/// `i` holds the slot of token `i` of the request that owns row `r`.
#[derive(Debug, Clone)]
pub struct ReqToTokenPool {
    max_context: usize,
    table: Vec<Slot>,
    in_use: Vec<bool>,
    free: Vec<u32>,
}

impl ReqToTokenPool {
    /// A table of `rows` rows of `max_context` slots each, all free.
    ///
    /// # Panics
    /// If `rows` exceeds `u32::MAX`, since row ids are `u32` ([`crate::KvCacheManager::new`]
    /// reports that as a configuration error instead).
    pub fn new(rows: usize, max_context: usize) -> Self {
        let rows32 =
            u32::try_from(rows).expect("row ids are u32, so a table has at most u32::MAX rows");
        ReqToTokenPool {
            max_context,
            table: vec![0; rows * max_context],
            in_use: vec![false; rows],
            free: (0..rows32).rev().collect(),
        }
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.in_use.len()
    }

    /// Slots per row.
    pub fn max_context(&self) -> usize {
        self.max_context
    }

    /// Rows not in use.
    pub fn available(&self) -> usize {
        self.free.len()
    }

    /// Takes a free row (lowest index first).
    pub fn alloc(&mut self) -> Result<RowId, KvError> {
        let row = self
            .free
            .pop()
            .ok_or(KvError::NoFreeRow { rows: self.rows() })?;
        self.in_use[row as usize] = true;
        Ok(RowId(row))
    }

    /// Returns a row to the free list.
    pub fn free(&mut self, row: RowId) -> Result<(), KvError> {
        self.check(row)?;
        self.in_use[row.0 as usize] = false;
        self.free.push(row.0);
        Ok(())
    }

    /// Whether `row` is allocated.
    pub fn is_in_use(&self, row: RowId) -> bool {
        self.in_use.get(row.0 as usize).copied().unwrap_or(false)
    }

    fn check(&self, row: RowId) -> Result<(), KvError> {
        if self.is_in_use(row) {
            Ok(())
        } else {
            Err(KvError::UnknownRow(row))
        }
    }

    fn span(
        &self,
        row: RowId,
        start: usize,
        len: usize,
    ) -> Result<std::ops::Range<usize>, KvError> {
        self.check(row)?;
        let end = start.checked_add(len).filter(|&e| e <= self.max_context);
        match end {
            Some(end) => {
                let base = row.0 as usize * self.max_context;
                Ok(base + start..base + end)
            }
            None => Err(KvError::ContextOverflow {
                row,
                len: start.saturating_add(len),
                max: self.max_context,
            }),
        }
    }

    /// Writes `slots` at positions `start..start + slots.len()` of `row`.
    pub fn write(&mut self, row: RowId, start: usize, slots: &[Slot]) -> Result<(), KvError> {
        let span = self.span(row, start, slots.len())?;
        self.table[span].copy_from_slice(slots);
        Ok(())
    }

    /// Reads `len` slots of `row` from position `start`.
    pub fn read(&self, row: RowId, start: usize, len: usize) -> Result<&[Slot], KvError> {
        let span = self.span(row, start, len)?;
        Ok(&self.table[span])
    }

    /// Frees every row.
    pub fn clear(&mut self) {
        let rows = self.rows();
        *self = ReqToTokenPool::new(rows, self.max_context);
    }
}
