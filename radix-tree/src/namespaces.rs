//! The namespace table: interns each [`Namespace`] that owns nodes into a small id, and counts
//! the nodes that carry each id, so that a namespace is freed (its strings dropped, its id
//! recycled) as soon as its last node leaves the tree.
//!
//! Namespaces come from clients (cache salts, tenants, adapters), so keeping every one ever seen
//! would let a client grow the cache's memory without bound; with the counts, the table is
//! bounded by the live nodes. The shared namespace (id [`SHARED`]) is permanent.

use crate::key::Namespace;
use rustc_hash::FxHashMap;

/// The id of the shared namespace, which is never freed.
pub(crate) const SHARED: u32 = 0;

/// One live namespace: its value and how many nodes carry its id.
#[derive(Debug)]
struct Entry {
    name: Namespace,
    nodes: usize,
}

/// Ids of the namespaces that own nodes, with a count of nodes per id.
#[derive(Debug)]
pub(crate) struct NamespaceTable {
    ids: FxHashMap<Namespace, u32>,
    /// Indexed by id; `None` for a freed id (which is then on `free`).
    entries: Vec<Option<Entry>>,
    free: Vec<u32>,
}

impl Default for NamespaceTable {
    fn default() -> Self {
        let mut ids = FxHashMap::default();
        ids.insert(Namespace::shared(), SHARED);
        NamespaceTable {
            ids,
            entries: vec![Some(Entry {
                name: Namespace::shared(),
                nodes: 0,
            })],
            free: Vec::new(),
        }
    }
}

impl NamespaceTable {
    /// Live namespaces, the shared one included.
    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }

    /// Ids in use or free: every id is below this.
    pub(crate) fn slots(&self) -> usize {
        self.entries.len()
    }

    /// The id of `ns` if it owns nodes (or is shared); never creates an entry.
    pub(crate) fn get(&self, ns: &Namespace) -> Option<u32> {
        self.ids.get(ns).copied()
    }

    /// The id of `ns`, creating an entry with no nodes if there is none. The caller must
    /// [`acquire`](Self::acquire) the id for a new node before it next releases or checks the
    /// table, since a non-shared entry without nodes is an invariant violation.
    pub(crate) fn intern(&mut self, ns: &Namespace) -> u32 {
        if let Some(id) = self.get(ns) {
            return id;
        }
        let entry = Some(Entry {
            name: ns.clone(),
            nodes: 0,
        });
        let id = match self.free.pop() {
            Some(id) => {
                self.entries[id as usize] = entry;
                id
            }
            None => {
                self.entries.push(entry);
                u32::try_from(self.entries.len() - 1)
                    .expect("live namespaces are bounded by live nodes, whose indices are u32")
            }
        };
        self.ids.insert(ns.clone(), id);
        id
    }

    /// Counts one more node carrying `id`.
    pub(crate) fn acquire(&mut self, id: u32) {
        self.entry_mut(id).nodes += 1;
    }

    /// Counts one node fewer carrying `id`; frees the entry (and makes the id reusable) when it
    /// was the last one, unless it is the shared namespace.
    pub(crate) fn release(&mut self, id: u32) {
        let entry = self.entry_mut(id);
        entry.nodes = entry
            .nodes
            .checked_sub(1)
            .expect("a namespace is released only by a node that acquired it");
        if entry.nodes == 0 && id != SHARED {
            let entry = self.entries[id as usize]
                .take()
                .expect("the entry was live a moment ago");
            self.ids.remove(&entry.name);
            self.free.push(id);
        }
    }

    /// Frees every namespace but the shared one (when the tree drops all its nodes), giving the
    /// table's memory back.
    pub(crate) fn reset(&mut self) {
        *self = Self::default();
    }

    /// The namespace with id `id`.
    ///
    /// # Panics
    /// If `id` is not live; every live node's id is.
    pub(crate) fn name(&self, id: u32) -> &Namespace {
        &self.entry(id).name
    }

    fn entry(&self, id: u32) -> &Entry {
        self.entries
            .get(id as usize)
            .and_then(Option::as_ref)
            .expect("a node's namespace id stays live while the node exists")
    }

    fn entry_mut(&mut self, id: u32) -> &mut Entry {
        self.entries
            .get_mut(id as usize)
            .and_then(Option::as_mut)
            .expect("a node's namespace id stays live while the node exists")
    }

    /// Verifies the table against `counted`, the number of live nodes carrying each id (at most
    /// [`slots`](Self::slots) long; ids past its end carry none): every live entry's count
    /// matches, no non-shared entry is empty, the map and the entries agree, and freed ids carry
    /// no node and are on the free list once.
    pub(crate) fn check(&self, counted: &[usize]) -> Result<(), String> {
        if counted.len() > self.entries.len() {
            return Err(format!(
                "a node carries namespace id {} beyond the table",
                counted.len() - 1
            ));
        }
        if !matches!(&self.entries[SHARED as usize], Some(e) if e.name.is_shared()) {
            return Err("namespace id 0 must be the shared namespace".into());
        }
        let mut live = 0usize;
        for (id, entry) in self.entries.iter().enumerate() {
            let nodes = counted.get(id).copied().unwrap_or(0);
            match entry {
                Some(entry) => {
                    self.check_entry(id, entry, nodes)?;
                    live += 1;
                }
                None if nodes > 0 => {
                    return Err(format!("{nodes} nodes carry the freed namespace id {id}"));
                }
                None => {}
            }
        }
        if live != self.ids.len() {
            return Err(format!(
                "{live} namespace entries but {} interned names",
                self.ids.len()
            ));
        }
        self.check_free_list(live)
    }

    fn check_entry(&self, id: usize, entry: &Entry, nodes: usize) -> Result<(), String> {
        if entry.nodes != nodes {
            return Err(format!(
                "namespace {id} ({}) counts {} nodes but {nodes} carry it",
                entry.name, entry.nodes
            ));
        }
        if nodes == 0 && id != SHARED as usize {
            return Err(format!("namespace {id} ({}) has no nodes", entry.name));
        }
        if self.get(&entry.name).map(|i| i as usize) != Some(id) {
            return Err(format!(
                "namespace {id} ({}) is not interned under its id",
                entry.name
            ));
        }
        Ok(())
    }

    fn check_free_list(&self, live: usize) -> Result<(), String> {
        let mut listed = vec![false; self.entries.len()];
        for &id in &self.free {
            let fresh = self.entries.get(id as usize).is_some_and(Option::is_none)
                && !std::mem::replace(&mut listed[id as usize], true);
            if !fresh {
                return Err(format!(
                    "free namespace id {id} is live, unknown or repeated"
                ));
            }
        }
        if live + self.free.len() != self.entries.len() {
            return Err(format!(
                "{live} live and {} free namespace ids but {} slots",
                self.free.len(),
                self.entries.len()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn released_namespaces_are_freed_and_their_ids_reused() {
        let mut t = NamespaceTable::default();
        let a = t.intern(&Namespace::salted("a"));
        t.acquire(a);
        t.acquire(a);
        let b = t.intern(&Namespace::salted("b"));
        t.acquire(b);
        assert_eq!((t.len(), t.intern(&Namespace::salted("a"))), (3, a));
        assert_eq!(t.check(&[0, 2, 1]), Ok(()));
        t.release(a);
        assert_eq!(t.get(&Namespace::salted("a")), Some(a));
        t.release(a);
        assert_eq!((t.len(), t.get(&Namespace::salted("a"))), (2, None));
        assert_eq!(t.check(&[0, 0, 1]), Ok(()));
        assert!(t.check(&[0, 1, 1]).is_err(), "a node on a freed id");
        let c = t.intern(&Namespace::salted("c"));
        assert_eq!(c, a, "the freed id is reused");
        t.acquire(c);
        assert_eq!(t.name(c), &Namespace::salted("c"));
        assert_eq!(t.check(&[0, 1, 1]), Ok(()));
    }

    #[test]
    fn shared_namespace_is_permanent_and_reset_frees_the_rest() {
        let mut t = NamespaceTable::default();
        t.acquire(SHARED);
        t.release(SHARED);
        assert_eq!(t.get(&Namespace::shared()), Some(SHARED));
        let a = t.intern(&Namespace::salted("a"));
        t.acquire(a);
        t.reset();
        assert_eq!((t.len(), t.get(&Namespace::salted("a"))), (1, None));
        assert_eq!(t.check(&[]), Ok(()));
    }

    #[test]
    fn check_reports_miscounts_and_empty_entries() {
        let mut t = NamespaceTable::default();
        let a = t.intern(&Namespace::salted("a"));
        assert!(t.check(&[]).is_err(), "an entry without nodes");
        t.acquire(a);
        assert!(t.check(&[0, 2]).is_err(), "a miscount");
        assert!(t.check(&[0, 1, 1]).is_err(), "an id beyond the table");
        assert_eq!(t.check(&[0, 1]), Ok(()));
    }
}
