//! Accounting: where every slot is, and a full check that each page has exactly one owner.

use super::{KvCacheManager, RowInfo};
use crate::error::KvError;
use crate::req_to_token::RowId;
use crate::Slot;

/// Who holds a page, as [`KvCacheManager::check_accounting`] finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    /// Not yet claimed: a page still here at the end has leaked.
    Nobody,
    /// On the allocator's free list.
    Free,
    /// Holds values of the radix tree.
    Tree,
    /// Private to one running request.
    Request,
}

/// The owner of each page (indexed by page id) and which slots were already claimed.
#[derive(Debug)]
struct Owners {
    page: Vec<Owner>,
    seen: Vec<bool>,
}

/// An accounting failure with the given message.
fn fail<T>(msg: String) -> Result<T, KvError> {
    Err(KvError::Accounting(msg))
}

/// Where every slot is, in tokens. `available + evictable + protected + private == capacity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Accounting {
    /// Allocatable slots.
    pub capacity: usize,
    /// Slots on the free list (including pages released in an open free group).
    pub available: usize,
    /// Slots in unlocked tree nodes.
    pub evictable: usize,
    /// Slots in locked tree nodes.
    pub protected: usize,
    /// Slots owned privately by requests (whole pages).
    pub private: usize,
    /// Rows in use.
    pub active_rows: usize,
}

impl KvCacheManager {
    /// The current accounting, without checks.
    pub fn accounting(&self) -> Accounting {
        let p = self.page_size();
        let free_pages = (1..=self.alloc.num_pages() as u32)
            .filter(|&pg| self.alloc.is_page_free(pg))
            .count();
        let private: usize = self
            .rows
            .iter()
            .flatten()
            .map(|r| r.kv_len.div_ceil(p) * p - r.protected_len)
            .sum();
        Accounting {
            capacity: self.capacity(),
            available: free_pages * p,
            evictable: self.tree.evictable_size(),
            protected: self.tree.protected_size(),
            private,
            active_rows: self.active,
        }
    }

    /// Checks that every page is in exactly one place (free list, tree, or one request's private
    /// range), that the token counts add up to the capacity, that each row's cached part points at
    /// the tree's slots, and the tree's own invariants. Returns the accounting when all hold.
    pub fn check_accounting(&self) -> Result<Accounting, KvError> {
        self.tree
            .check_integrity()
            .map_err(|e| KvError::Accounting(e.to_string()))?;
        self.check_tier()?;
        let mut owners = self.free_page_owners();
        self.claim_tree_pages(&mut owners)?;
        let mut active = 0;
        for (i, info) in self.rows.iter().enumerate() {
            // A row without state is free; the table's own count is compared below.
            let Some(info) = info else { continue };
            active += 1;
            self.check_row(i, info, &mut owners)?;
        }
        if active != self.active || self.table.available() + active != self.table.rows() {
            return fail(format!("{active} rows with state, {} counted", self.active));
        }
        let pages = self.alloc.num_pages();
        if let Some(pg) = (1..=pages).find(|&pg| owners.page[pg] == Owner::Nobody) {
            return fail(format!("page {pg} is owned by nobody (leaked)"));
        }
        let acc = self.accounting();
        if acc.available + acc.evictable + acc.protected + acc.private != acc.capacity {
            return fail(format!("{acc:?} does not add up to the capacity"));
        }
        Ok(acc)
    }

    /// Ownership as the free list alone sees it: free pages owned by it, the rest by nobody yet.
    fn free_page_owners(&self) -> Owners {
        let pages = self.alloc.num_pages();
        let mut page = vec![Owner::Nobody; pages + 1];
        for (pg, o) in page.iter_mut().enumerate().skip(1) {
            if self.alloc.is_page_free(pg as u32) {
                *o = Owner::Free;
            }
        }
        Owners {
            page,
            seen: vec![false; (pages + 1) * self.page_size()],
        }
    }

    /// Gives the tree's pages to the tree: each slot at most once, no page also free, and only
    /// whole pages.
    fn claim_tree_pages(&self, owners: &mut Owners) -> Result<(), KvError> {
        let p = self.page_size();
        let pages = self.alloc.num_pages();
        let mut tree_slots_per_page = vec![0usize; pages + 1];
        for slot in self.tree.values() {
            let pg = self.alloc.page_of(slot) as usize;
            if pg == 0 || pg > pages {
                return fail(format!("tree holds invalid slot {slot}"));
            }
            if std::mem::replace(&mut owners.seen[slot as usize], true) {
                return fail(format!("slot {slot} is in the tree twice"));
            }
            if matches!(owners.page[pg], Owner::Free | Owner::Request) {
                return fail(format!("page {pg} is in the tree and also free or private"));
            }
            owners.page[pg] = Owner::Tree;
            tree_slots_per_page[pg] += 1;
        }
        let partial =
            (1..=pages).find(|&pg| owners.page[pg] == Owner::Tree && tree_slots_per_page[pg] != p);
        if let Some(pg) = partial {
            return fail(format!("tree holds part of page {pg}"));
        }
        Ok(())
    }

    /// Checks row `i`'s state against the table and the tree, then gives its private pages to it.
    fn check_row(&self, i: usize, info: &RowInfo, owners: &mut Owners) -> Result<(), KvError> {
        let row = RowId(i as u32);
        if !self.table.is_in_use(row) {
            return fail(format!("row {i} has state but is free in the table"));
        }
        if info.protected_len > info.kv_len || !info.protected_len.is_multiple_of(self.page_size())
        {
            return fail(format!(
                "row {i}: protected {} of {}",
                info.protected_len, info.kv_len
            ));
        }
        let slots = self.table.read(row, 0, info.kv_len)?;
        if !self.tree.is_disabled() {
            let cached = self.tree.path_values(info.last_node)?;
            if self.tree.lock_ref(info.last_node)? == 0 && info.last_node != self.tree.root() {
                return fail(format!("row {i} holds no lock on its last node"));
            }
            if cached[..] != slots[..info.protected_len] {
                return fail(format!(
                    "row {i}: cached part does not point at the tree's slots"
                ));
            }
        }
        self.claim_private_pages(i, &slots[info.protected_len..], owners)
    }

    /// Gives the pages of row `i`'s private slots to it: each slot at most once, and no page
    /// owned by anyone else.
    fn claim_private_pages(
        &self,
        i: usize,
        private: &[Slot],
        owners: &mut Owners,
    ) -> Result<(), KvError> {
        let pages = self.alloc.num_pages();
        let mut last_page = None;
        for &slot in private {
            let pg = self.alloc.page_of(slot) as usize;
            if pg == 0 || pg > pages {
                return fail(format!("row {i} holds invalid slot {slot}"));
            }
            if std::mem::replace(&mut owners.seen[slot as usize], true) {
                return fail(format!("slot {slot} is owned twice (row {i})"));
            }
            if last_page != Some(pg) {
                if owners.page[pg] != Owner::Nobody {
                    return fail(format!("page {pg} of row {i} is also owned elsewhere"));
                }
                owners.page[pg] = Owner::Request;
                last_page = Some(pg);
            }
        }
        Ok(())
    }
}
