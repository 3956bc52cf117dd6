//! Decoding a snapshot's large collections at their full size at once.
//!
//! serde's own `Deserialize` for `HashMap` and `Vec` pre-allocates at most 1 MiB of entries,
//! whatever length the input announces (`serde::de::size_hint::cautious`): in a
//! self-describing format the hint may be a guess. Past that the collection grows by
//! doubling while it is decoded, and each growth of a hash map rehashes every entry into a
//! fresh table while the old one is still alive. A shard's citizens map (24 bytes an entry)
//! thus starts at 43,690 entries and doubles twice on its way to 150,000; in a profile of a
//! restart with 10 M citizens, ~11% of all the restart's page faults were these growths.
//!
//! A snapshot announces exact lengths (bincode writes each collection's length before its
//! entries), so the collections a shard holds per citizen, per appointment, per slot or per
//! waiting entry are decoded with [`map`] and [`vec`] (`#[serde(deserialize_with = ...)]`),
//! which allocate them once at that length, up to [`PREALLOCATED_BYTES_MAX`]. Only decoding
//! changes: the fields serialize as before, so the bytes on disk are the same.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::marker::PhantomData;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// Most bytes of entries one collection is allocated before its entries are decoded. A
/// snapshot is CRC-checked, but a length that is wrong anyway (a bug, a hostile file) must
/// fail at its first missing entry, not allocate without bound first. 1 GiB is the largest
/// snapshot read at all ([`crate::journal::DECODE_BYTES_MAX`]) and ~44 M citizens in one
/// map, far more than a shard holds; a longer collection still decodes, growing from there.
pub const PREALLOCATED_BYTES_MAX: usize = 1 << 30;

/// How many entries of type `T` to allocate for a collection whose decoder announced
/// `size_hint` entries: all of them, up to [`PREALLOCATED_BYTES_MAX`].
pub fn preallocated_entries<T>(size_hint: Option<usize>) -> usize {
    let entries_max = PREALLOCATED_BYTES_MAX / std::mem::size_of::<T>().max(1);
    size_hint.unwrap_or(0).min(entries_max)
}

/// Decodes a hash map (an `FxHashMap` or any other hasher with a default) allocated once at
/// the length the decoder announces. Entries are inserted in the order they come, a later
/// duplicate key replacing an earlier one, as serde's own `HashMap` does.
pub fn map<'de, D, K, V, S>(deserializer: D) -> Result<HashMap<K, V, S>, D::Error>
where
    D: Deserializer<'de>,
    K: Deserialize<'de> + Eq + Hash,
    V: Deserialize<'de>,
    S: BuildHasher + Default,
{
    struct MapVisitor<K, V, S>(PhantomData<(K, V, S)>);

    impl<'de, K, V, S> Visitor<'de> for MapVisitor<K, V, S>
    where
        K: Deserialize<'de> + Eq + Hash,
        V: Deserialize<'de>,
        S: BuildHasher + Default,
    {
        type Value = HashMap<K, V, S>;

        fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
            formatter.write_str("a map")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
            let capacity = preallocated_entries::<(K, V)>(access.size_hint());
            let mut map = HashMap::with_capacity_and_hasher(capacity, S::default());
            while let Some((key, value)) = access.next_entry()? {
                map.insert(key, value);
            }
            Ok(map)
        }
    }

    deserializer.deserialize_map(MapVisitor(PhantomData))
}

/// Decodes a `Vec` allocated once at the length the decoder announces.
pub fn vec<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct VecVisitor<T>(PhantomData<T>);

    impl<'de, T: Deserialize<'de>> Visitor<'de> for VecVisitor<T> {
        type Value = Vec<T>;

        fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
            formatter.write_str("a sequence")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
            let mut values = Vec::with_capacity(preallocated_entries::<T>(access.size_hint()));
            while let Some(value) = access.next_element()? {
                values.push(value);
            }
            Ok(values)
        }
    }

    deserializer.deserialize_seq(VecVisitor(PhantomData))
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::hash::DefaultHasher;

    use serde::{Deserialize, Serialize};

    use super::*;

    /// A hasher that counts the keys it hashes: a map hashes each key once when it is
    /// inserted, and every key again each time it grows.
    #[derive(Default)]
    struct CountingHasher {
        hashed: Cell<usize>,
    }

    impl BuildHasher for CountingHasher {
        type Hasher = DefaultHasher;

        fn build_hasher(&self) -> DefaultHasher {
            self.hashed.set(self.hashed.get() + 1);
            DefaultHasher::new()
        }
    }

    #[derive(Serialize, Deserialize)]
    struct Presized {
        #[serde(deserialize_with = "map")]
        map: HashMap<u64, u64, CountingHasher>,
        #[serde(deserialize_with = "vec")]
        vec: Vec<u64>,
    }

    #[derive(Serialize, Deserialize)]
    struct Plain {
        map: HashMap<u64, u64, CountingHasher>,
        vec: Vec<u64>,
    }

    fn config() -> bincode::config::Configuration {
        bincode::config::standard()
    }

    /// 200,000 entries: more than serde's cautious 1 MiB pre-allocation of either (65,536
    /// entries of the map, 131,072 of the vector), so the comparison below means something.
    const ENTRIES: u64 = 200_000;

    #[test]
    fn announced_lengths_are_allocated_once_and_the_bytes_do_not_change() {
        let sized = Presized {
            map: (0..ENTRIES).map(|i| (i, i * 3)).collect(),
            vec: (0..ENTRIES).collect(),
        };
        let bytes = bincode::serde::encode_to_vec(&sized, config()).unwrap();

        let (back, read): (Presized, _) =
            bincode::serde::decode_from_slice(&bytes, config()).unwrap();
        assert_eq!(read, bytes.len());
        // One hash per key: the map never grew (nor rehashed) while it was decoded.
        assert_eq!(back.map.hasher().hashed.get(), ENTRIES as usize);
        assert_eq!(back.vec.capacity(), back.vec.len());
        assert_eq!(back.map, sized.map);
        assert_eq!(back.vec, sized.vec);

        // Only decoding changes: the same values encode to the same bytes either way.
        let plain = Plain {
            map: sized.map,
            vec: sized.vec,
        };
        assert_eq!(
            bincode::serde::encode_to_vec(&plain, config()).unwrap(),
            bytes
        );

        // serde's own decode of the same bytes grows both (what the helpers are for).
        let (cautious, _): (Plain, _) =
            bincode::serde::decode_from_slice(&bytes, config()).unwrap();
        assert!(cautious.map.hasher().hashed.get() > ENTRIES as usize);
        assert!(cautious.vec.capacity() > cautious.vec.len());
    }

    #[test]
    fn an_announced_length_is_allocated_up_to_the_bound() {
        assert_eq!(preallocated_entries::<(u64, u64)>(Some(5)), 5);
        assert_eq!(preallocated_entries::<(u64, u64)>(None), 0);
        // A corrupt length of 2^60 entries: 1 GiB of them, and the decode fails at the
        // first entry missing.
        assert_eq!(
            preallocated_entries::<(u64, u64)>(Some(1 << 60)),
            PREALLOCATED_BYTES_MAX / 16
        );
        // An entry counts as a byte at least.
        assert_eq!(
            preallocated_entries::<()>(Some(1 << 60)),
            PREALLOCATED_BYTES_MAX
        );
    }
}
