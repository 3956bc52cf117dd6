//! Stable, process-independent hashing.
//!
//! This module owns the one hash function that decides *where data lives*: which
//! virtual shard a key belongs to ([`shard_of`]) and where shards and nodes sit on
//! the consistent-hash ring (`crate::ring`). Every gateway and every restart must
//! compute exactly the same values, so nothing here may use std's
//! `DefaultHasher`/`RandomState` (randomly seeded per process) or any hasher whose
//! output may change between library versions.

/// FNV-1a 64-bit offset basis (from the FNV specification).
const FNV64_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a 64-bit prime (from the FNV specification).
const FNV64_PRIME: u64 = 0x0000_0100_0000_01b3;

/// A fixed, well-mixed 64-bit hash of `bytes`.
///
/// Definition (this *is* the contract):
///
/// 1. FNV-1a 64 over the bytes: start at `0xcbf29ce484222325`; for each byte,
///    `h ^= byte; h = h.wrapping_mul(0x100000001b3)`.
/// 2. The MurmurHash3 `fmix64` finalizer:
///    `h ^= h >> 33; h *= 0xff51afd7ed558ccd; h ^= h >> 33; h *= 0xc4ceb9fe1a85ec53; h ^= h >> 33`
///    (multiplications wrapping).
///
/// FNV-1a alone is fast and byte-order independent but mixes its high bits into its
/// low bits poorly, and short, similar keys (`"k1"`, `"k2"`, ...) differ only in a
/// few low bits; the finalizer avalanches every input bit across the whole word, so
/// both `hash % n` and the position on a 64-bit ring are evenly distributed.
///
/// **This function must never change.** Its output decides which shard (and so which
/// node and which on-disk log) owns a key; changing it silently relocates every
/// key. The known-answer tests in this module pin it. It is not a cryptographic
/// hash and must not be used where an adversary choosing keys matters.
#[must_use]
pub fn stable_hash64(bytes: &[u8]) -> u64 {
    let mut h = FNV64_OFFSET_BASIS;
    for &byte in bytes {
        h ^= u64::from(byte);
        h = h.wrapping_mul(FNV64_PRIME);
    }
    fmix64(h)
}

/// MurmurHash3's 64-bit finalizer: a bijection with full avalanche.
#[inline]
fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h
}

/// The virtual shard (in `0..shards`) that owns `key`:
/// `stable_hash64(key.as_bytes()) % shards`.
///
/// The modulo bias is negligible: `shards` is at most a few thousand against a
/// 64-bit hash.
///
/// # Panics
///
/// Panics if `shards` is zero.
#[must_use]
pub fn shard_of(key: &str, shards: u32) -> u32 {
    assert!(shards > 0, "shard_of: shard count must be positive");
    let shard = stable_hash64(key.as_bytes()) % u64::from(shards);
    // `shard < shards <= u32::MAX`, so the conversion cannot fail.
    u32::try_from(shard).expect("remainder is below a u32 modulus")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known answers, computed once from the definition above and pinned. If one of
    /// these fails, the placement function changed: every key would move. Do not
    /// "fix" the expected values.
    #[test]
    fn stable_hash64_known_answers() {
        assert_eq!(stable_hash64(b""), KAT_EMPTY);
        assert_eq!(stable_hash64(b"a"), KAT_A);
        assert_eq!(stable_hash64(b"k0"), KAT_K0);
        assert_eq!(stable_hash64(b"shard-0"), KAT_SHARD_0);
        assert_eq!(stable_hash64(b"node-1#0"), KAT_NODE_1_VNODE_0);
        assert_eq!(stable_hash64("événement/ünïcode".as_bytes()), KAT_UNICODE);
    }

    /// The FNV-1a stage matches the published FNV-1a 64 test vectors, and the
    /// whole function is exactly `fmix64(fnv1a(bytes))`.
    #[test]
    fn fnv1a_stage_matches_reference_vectors() {
        fn fnv1a(bytes: &[u8]) -> u64 {
            bytes.iter().fold(FNV64_OFFSET_BASIS, |h, &b| {
                (h ^ u64::from(b)).wrapping_mul(FNV64_PRIME)
            })
        }
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(stable_hash64(b"foobar"), fmix64(0x8594_4171_f739_67e8));
    }

    #[test]
    fn shard_of_known_answers() {
        assert_eq!(shard_of("k0", 64), KAT_SHARD_OF_K0_64);
        assert_eq!(shard_of("a", 4096), KAT_SHARD_OF_A_4096);
        assert_eq!(shard_of("anything", 1), 0);
    }

    #[test]
    #[should_panic(expected = "shard count must be positive")]
    fn shard_of_rejects_zero_shards() {
        let _ = shard_of("k", 0);
    }

    /// 100,000 sequential keys over 64 shards: every shard within ±10% of the mean
    /// (1562.5). A binomial count here has a standard deviation of about 39 (2.5%),
    /// so ±10% is a 4-sigma bound: a failure means a badly mixed hash, not bad luck.
    #[test]
    fn shard_of_distributes_sequential_keys_evenly() {
        const SHARDS: u32 = 64;
        const KEYS: u32 = 100_000;
        let mut counts = vec![0_u32; SHARDS as usize];
        for i in 0..KEYS {
            counts[shard_of(&format!("k{i}"), SHARDS) as usize] += 1;
        }
        let mean = f64::from(KEYS) / f64::from(SHARDS);
        let (min, max) = (*counts.iter().min().unwrap(), *counts.iter().max().unwrap());
        eprintln!(
            "shard_of balance: {KEYS} keys / {SHARDS} shards, mean {mean}, min {min} ({:+.2}%), max {max} ({:+.2}%)",
            (f64::from(min) / mean - 1.0) * 100.0,
            (f64::from(max) / mean - 1.0) * 100.0,
        );
        for (shard, &count) in counts.iter().enumerate() {
            let deviation = (f64::from(count) - mean).abs() / mean;
            assert!(
                deviation <= 0.10,
                "shard {shard} got {count} keys, {:.1}% off the mean {mean}",
                deviation * 100.0
            );
        }
    }

    // Pinned known-answer values (see `stable_hash64_known_answers`), computed once
    // from the definition with an independent implementation.
    const KAT_EMPTY: u64 = 0xefd0_1f60_ba99_2926;
    const KAT_A: u64 = 0x82a2_a958_a9be_ce5b;
    const KAT_K0: u64 = 0x0549_eda7_a9a2_b5c9;
    const KAT_SHARD_0: u64 = 0xbf6f_b504_9b92_34ec;
    const KAT_NODE_1_VNODE_0: u64 = 0xf28b_65a6_0490_0cc8;
    const KAT_UNICODE: u64 = 0x864f_474a_e1f0_e05b;
    const KAT_SHARD_OF_K0_64: u32 = 9;
    const KAT_SHARD_OF_A_4096: u32 = 3675;
}
