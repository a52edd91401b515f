//! Dense ids for names and other keys, and keeping hash tables' room in
//! proportion to what they hold.

use crate::model::SharedName;

/// Shrinks a hash map that uses under a quarter of its room (and more than
/// a few entries' worth), so it stays within 2-8x its size.
pub fn shrink_sparse<K: std::hash::Hash + Eq, V, S: std::hash::BuildHasher>(
    map: &mut std::collections::HashMap<K, V, S>,
) {
    if map.capacity() > 64 && map.len() * 4 < map.capacity() {
        map.shrink_to(map.len() * 2);
    }
}

/// Names (or other keys) and their dense ids: the keys in a vector by id,
/// and a hash table of ids alone (4 bytes a slot, where a map from the keys
/// would take 24).
#[derive(Clone)]
pub struct Interner<K = SharedName> {
    ids: hashbrown::HashTable<u32>,
    names: Vec<K>,
}

impl<K> Default for Interner<K> {
    fn default() -> Self {
        Interner {
            ids: hashbrown::HashTable::new(),
            names: Vec::new(),
        }
    }
}

impl<K: std::hash::Hash + Eq> Interner<K> {
    fn hash<Q: std::hash::Hash + ?Sized>(key: &Q) -> u64 {
        use std::hash::BuildHasher;
        rustc_hash::FxBuildHasher.hash_one(key)
    }

    /// The id of `key`, if it has one.
    pub fn get<Q>(&self, key: &Q) -> Option<u32>
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        self.ids
            .find(Self::hash(key), |id| {
                self.names[*id as usize].borrow() == key
            })
            .copied()
    }

    /// The id of `key`, given the next one if it has none (keeping that copy).
    pub fn insert(&mut self, key: K) -> u32 {
        if let Some(id) = self.get(&key) {
            return id;
        }
        let id = self.names.len() as u32;
        let Interner { ids, names } = self;
        ids.insert_unique(Self::hash(&key), id, |i| Self::hash(&names[*i as usize]));
        names.push(key);
        id
    }

    /// The key of an id [`Interner::insert`] gave.
    /// Every key, in id order.
    pub fn keys(&self) -> &[K] {
        &self.names
    }

    pub fn key(&self, id: u32) -> &K {
        &self.names[id as usize]
    }

    /// Whether the keys' vector has room it doubled into (after a load).
    pub fn has_spare_room(&self) -> bool {
        self.names.capacity() > self.names.len()
    }

    /// Gives back the room the keys' vector doubled into (after a load).
    pub fn shrink(&mut self) {
        self.names.shrink_to_fit();
    }
}
