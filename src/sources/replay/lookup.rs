//! A decoder's table of the tags it has met.
//!
//! Tag ids come from the registry, refreshed on a miss (an assets reload);
//! each decoder keeps its own table of the names it has met, the name's
//! bytes inline beside the id in one 64-byte slot, so a lookup reads one
//! cache line (the registry's needs its table, its names and each name's
//! bytes). Ids never change, so entries stay right.
//!
//! The table is open addressing with linear probing, so the slot a name
//! starts at follows from its hash alone: a decoder hashes a row's tag a
//! few rows before it needs the id and prefetches that slot (at 20,000 tags
//! the table is 2 MiB and almost every row's slot is a cache miss).

use std::sync::Arc;

use crate::ingest::TagRegistry;
use crate::model::TagId;

/// The longest name kept in the table; longer ones ask the registry.
const MET_BYTES: usize = 46;

/// A free slot's `len`.
const FREE: u8 = u8::MAX;

/// A tag of up to [`MET_BYTES`] bytes and its id: one cache line.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Met {
    hash: u64,
    id: TagId,
    len: u8,
    name: [u8; MET_BYTES],
}

const EMPTY: Met = Met {
    hash: 0,
    id: 0,
    len: FREE,
    name: [0; MET_BYTES],
};

pub(super) struct Lookup {
    tags: Arc<TagRegistry>,
    view: crate::ingest::TagView,
    /// A power of two of slots, at most three quarters used.
    slots: Vec<Met>,
    used: usize,
    /// `64 - log2(slots.len())`: a hash's top bits pick its first slot.
    shift: u32,
}

impl Lookup {
    pub(super) fn new(tags: &Arc<TagRegistry>) -> Lookup {
        let mut l = Lookup {
            tags: tags.clone(),
            view: tags.view(),
            slots: Vec::new(),
            used: 0,
            shift: 0,
        };
        l.resize(64);
        l
    }

    /// The hash [`Lookup::id_hashed`] takes.
    #[inline]
    pub(super) fn hash(tag: &str) -> u64 {
        xxhash_rust::xxh3::xxh3_64(tag.as_bytes())
    }

    /// A row of the tag with this hash comes soon: load its first slot.
    #[inline]
    pub(super) fn prefetch(&self, hash: u64) {
        crate::model::hint::prefetch(&self.slots[self.first(hash)]);
    }

    pub(super) fn id(&mut self, tag: &str) -> Option<TagId> {
        self.id_hashed(tag, Self::hash(tag))
    }

    /// [`Lookup::id`] of a tag whose [`Lookup::hash`] is `hash`.
    pub(super) fn id_hashed(&mut self, tag: &str, hash: u64) -> Option<TagId> {
        let b = tag.as_bytes();
        if b.len() > MET_BYTES {
            return self.registered(tag);
        }
        let mask = self.slots.len() - 1;
        let mut i = self.first(hash);
        loop {
            let m = &self.slots[i];
            if m.len == FREE {
                break;
            }
            if m.hash == hash && &m.name[..m.len as usize] == b {
                return Some(m.id);
            }
            i = (i + 1) & mask;
        }
        let id = self.registered(tag)?;
        let mut name = [0; MET_BYTES];
        name[..b.len()].copy_from_slice(b);
        self.slots[i] = Met {
            hash,
            id,
            len: b.len() as u8,
            name,
        };
        self.used += 1;
        if self.used * 4 > self.slots.len() * 3 {
            self.resize(self.slots.len() * 2);
        }
        Some(id)
    }

    #[inline]
    fn first(&self, hash: u64) -> usize {
        (hash >> self.shift) as usize
    }

    /// Moves every entry into a table of `n` slots (a power of two).
    fn resize(&mut self, n: usize) {
        let old = std::mem::replace(&mut self.slots, vec![EMPTY; n]);
        self.shift = 64 - n.trailing_zeros();
        let mask = n - 1;
        for m in old.into_iter().filter(|m| m.len != FREE) {
            let mut i = self.first(m.hash);
            while self.slots[i].len != FREE {
                i = (i + 1) & mask;
            }
            self.slots[i] = m;
        }
    }

    fn registered(&mut self, tag: &str) -> Option<TagId> {
        self.tags.get_fresh(&mut self.view, tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_finds_its_registered_id_as_the_table_grows() {
        let names: Vec<String> = (0..5000)
            .map(|i| format!("site{}/line{}/m{i}/kw", i % 7, i % 3))
            .collect();
        let tags = Arc::new(TagRegistry::default());
        let ids: Vec<TagId> = names.iter().map(|n| tags.intern(n)).collect();
        let mut l = Lookup::new(&tags);
        for round in 0..2 {
            for (n, id) in names.iter().zip(&ids) {
                assert_eq!(l.id(n), Some(*id), "{n} in round {round}");
            }
        }
        assert_eq!(l.used, names.len());
        assert!(l.slots.len() >= names.len() * 4 / 3 && l.slots.len().is_power_of_two());
        assert_eq!(l.id("site0/unknown"), None);
        let long = "x".repeat(MET_BYTES + 1);
        let id = tags.intern(&long);
        assert_eq!(l.id(&long), Some(id));
        // A tag registered after the table was made (an assets reload).
        let late = tags.intern("site9/late/kw");
        assert_eq!(l.id("site9/late/kw"), Some(late));
    }
}
