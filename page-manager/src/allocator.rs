//! The KV slot allocator (SGLang's `TokenToKVPoolAllocator` and its paged variant in one).

use crate::error::KvError;
use crate::Slot;
use std::collections::VecDeque;

/// A snapshot of the allocator's free list, for rolling back speculative allocations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocatorState {
    free_pages: VecDeque<u32>,
    page_free: Vec<bool>,
}

/// Page-granular slot allocator. Page `p` holds slots `p * page_size .. (p + 1) * page_size`;
/// page 0 is reserved (a write target for padding) and never handed out. With `page_size == 1`
/// a page is a slot. Each page has one owner at a time: freeing any slot of a page frees the
/// whole page, and freeing a page that is already free is a [`KvError::DoubleFree`].
#[derive(Debug, Clone)]
pub struct SlotAllocator {
    page_size: usize,
    num_pages: usize,
    free_pages: VecDeque<u32>,
    /// Indexed by page id; entry 0 (reserved) is never free.
    page_free: Vec<bool>,
    /// Pages freed while a free group is open (already marked free, so a second free is caught),
    /// put on the free list together at its end.
    group: Option<Vec<u32>>,
}

fn ceil_to(n: usize, p: usize) -> usize {
    n.div_ceil(p) * p
}

impl SlotAllocator {
    /// An allocator over `num_pages` allocatable pages of `page_size` slots (plus reserved page 0).
    pub fn new(num_pages: usize, page_size: usize) -> Result<Self, KvError> {
        if page_size == 0 {
            return Err(KvError::Config("page size must be at least 1".into()));
        }
        let slots = num_pages
            .checked_add(1)
            .and_then(|pages| pages.checked_mul(page_size));
        if slots.is_none_or(|slots| u32::try_from(slots).is_err()) {
            return Err(KvError::Config(format!(
                "{num_pages} pages exceed the slot id range"
            )));
        }
        let mut alloc = SlotAllocator {
            page_size,
            num_pages,
            free_pages: VecDeque::new(),
            page_free: Vec::new(),
            group: None,
        };
        alloc.clear();
        Ok(alloc)
    }

    /// Tokens per page.
    pub fn page_size(&self) -> usize {
        self.page_size
    }

    /// Allocatable pages.
    pub fn num_pages(&self) -> usize {
        self.num_pages
    }

    /// Allocatable slots (`num_pages * page_size`).
    pub fn capacity(&self) -> usize {
        self.num_pages * self.page_size
    }

    /// Free slots (whole free pages times the page size).
    pub fn available_size(&self) -> usize {
        self.free_pages.len() * self.page_size
    }

    /// Free pages.
    pub fn free_pages(&self) -> usize {
        self.free_pages.len()
    }

    /// The page that holds `slot`.
    pub fn page_of(&self, slot: Slot) -> u32 {
        slot / self.page_size as u32
    }

    /// Whether `page` is on the free list.
    pub fn is_page_free(&self, page: u32) -> bool {
        self.page_free.get(page as usize).copied().unwrap_or(false)
    }

    /// Back to the initial state: every page free, in order.
    pub fn clear(&mut self) {
        let pages = u32::try_from(self.num_pages)
            .expect("new() checked that every slot id, so every page id, fits in u32");
        self.free_pages = (1..=pages).collect();
        self.page_free = vec![true; self.num_pages + 1];
        self.page_free[0] = false;
        self.group = None;
    }

    fn slots_of_page(&self, page: u32) -> impl Iterator<Item = Slot> {
        let p = self.page_size as u32;
        page * p..(page + 1) * p
    }

    fn take_pages(&mut self, n: usize) -> Result<Vec<u32>, KvError> {
        if n > self.free_pages.len() {
            return Err(KvError::OutOfMemory {
                needed: n * self.page_size,
                available: self.available_size(),
            });
        }
        let pages: Vec<u32> = self.free_pages.drain(..n).collect();
        for &p in &pages {
            self.page_free[p as usize] = false;
        }
        Ok(pages)
    }

    /// Allocates `count` slots as whole pages (`count` must be a multiple of the page size).
    /// On failure nothing is consumed.
    pub fn alloc(&mut self, count: usize) -> Result<Vec<Slot>, KvError> {
        if !count.is_multiple_of(self.page_size) {
            return Err(KvError::Unaligned {
                count,
                page_size: self.page_size,
            });
        }
        let pages = self.take_pages(count / self.page_size)?;
        Ok(pages
            .into_iter()
            .flat_map(|p| self.slots_of_page(p))
            .collect())
    }

    /// Pages that [`SlotAllocator::alloc_extend`] would take to grow a sequence.
    pub fn pages_needed(&self, prefix_len: usize, seq_len: usize) -> usize {
        seq_len.div_ceil(self.page_size)
            - prefix_len
                .div_ceil(self.page_size)
                .min(seq_len.div_ceil(self.page_size))
    }

    /// Slots for positions `prefix_len..seq_len` of a sequence whose last existing slot is
    /// `last_loc`: first the rest of the partial last page (`last_loc + 1, ...`), then whole new
    /// pages, then a new partial page. On failure nothing is consumed.
    pub fn alloc_extend(
        &mut self,
        prefix_len: usize,
        seq_len: usize,
        last_loc: Option<Slot>,
    ) -> Result<Vec<Slot>, KvError> {
        let p = self.page_size;
        if seq_len <= prefix_len {
            return Ok(Vec::new());
        }
        let fill = ceil_to(prefix_len, p).min(seq_len) - prefix_len;
        let mut out = Vec::with_capacity(seq_len - prefix_len);
        if fill > 0 {
            let last = last_loc.ok_or_else(|| {
                KvError::Config(format!(
                    "extend from {prefix_len} tokens needs the last slot"
                ))
            })?;
            if (last as usize + 1) % p != prefix_len % p || self.is_page_free(self.page_of(last)) {
                return Err(KvError::InvalidSlot(last));
            }
            out.extend((1..=fill as u32).map(|i| last + i));
        }
        let rest = seq_len - prefix_len - fill;
        let pages = self.take_pages(rest.div_ceil(p))?;
        for (i, page) in pages.into_iter().enumerate() {
            let take = (rest - i * p).min(p);
            out.extend(self.slots_of_page(page).take(take));
        }
        Ok(out)
    }

    /// The slot for one more token of a sequence of length `seq_len` whose last slot is `last_loc`:
    /// a new page only when `seq_len` is on a page boundary.
    pub fn alloc_decode(
        &mut self,
        seq_len: usize,
        last_loc: Option<Slot>,
    ) -> Result<Slot, KvError> {
        let slots = self.alloc_extend(seq_len, seq_len + 1, last_loc)?;
        Ok(*slots
            .first()
            .expect("alloc_extend for one more position returns exactly one slot"))
    }

    /// Returns the pages of `slots` to the free list (any slot of a page frees the whole page).
    /// The whole call is checked first: an invalid slot, a page that is already free, or (page
    /// size 1) the same slot twice leaves everything unchanged. Inside a free group the pages
    /// become available when the group ends.
    pub fn free(&mut self, slots: &[Slot]) -> Result<(), KvError> {
        self.free_pages_of(slots, true)
    }

    /// Like [`SlotAllocator::free`], but the pages are available at once even inside a free group
    /// (for eviction that must make room now).
    pub fn free_now(&mut self, slots: &[Slot]) -> Result<(), KvError> {
        self.free_pages_of(slots, false)
    }

    fn free_pages_of(&mut self, slots: &[Slot], grouped: bool) -> Result<(), KvError> {
        let mut pages: Vec<(u32, Slot)> = Vec::with_capacity(slots.len());
        for &s in slots {
            let page = self.page_of(s);
            if page == 0 || page as usize > self.num_pages {
                return Err(KvError::InvalidSlot(s));
            }
            if self.page_free[page as usize] {
                return Err(KvError::DoubleFree(s));
            }
            pages.push((page, s));
        }
        pages.sort_unstable();
        if self.page_size == 1 {
            if let Some(w) = pages.windows(2).find(|w| w[0].0 == w[1].0) {
                return Err(KvError::DoubleFree(w[1].1));
            }
        }
        pages.dedup_by_key(|(page, _)| *page);
        for &(page, _) in &pages {
            self.page_free[page as usize] = true;
            match &mut self.group {
                Some(group) if grouped => group.push(page),
                _ => self.free_pages.push_back(page),
            }
        }
        Ok(())
    }

    /// Starts batching frees (SGLang's `free_group_begin`): pages freed until
    /// [`SlotAllocator::free_group_end`] are released together.
    pub fn free_group_begin(&mut self) {
        if self.group.is_none() {
            self.group = Some(Vec::new());
        }
    }

    /// Releases every page freed since [`SlotAllocator::free_group_begin`].
    pub fn free_group_end(&mut self) {
        if let Some(pages) = self.group.take() {
            self.free_pages.extend(pages);
        }
    }

    /// A snapshot of the free list.
    pub fn backup_state(&self) -> AllocatorState {
        AllocatorState {
            free_pages: self.free_pages.clone(),
            page_free: self.page_free.clone(),
        }
    }

    /// Restores a snapshot taken by [`SlotAllocator::backup_state`].
    pub fn restore_state(&mut self, state: AllocatorState) {
        self.free_pages = state.free_pages;
        self.page_free = state.page_free;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_sizes_past_the_slot_id_range_are_a_config_error_not_an_overflow() {
        for (pages, page_size) in [(usize::MAX, 1), (usize::MAX / 2, 4), (1 << 32, 1)] {
            assert!(matches!(
                SlotAllocator::new(pages, page_size),
                Err(KvError::Config(_))
            ));
        }
        // With pages of 2^20 slots, the largest pool whose slot ids (page 0 included) fit in u32.
        let big = SlotAllocator::new(4094, 1 << 20).map(|a| a.capacity());
        assert_eq!(big, Ok(4094 << 20));
        assert!(SlotAllocator::new(4095, 1 << 20).is_err());
    }
}
