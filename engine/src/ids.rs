//! Identifiers: validation of client-chosen ids and the server-made appointment and
//! waitlist entry ids.
//!
//! An appointment id carries its owning shard, so any gateway routes it without a global
//! lookup: `ap-{shard}-{seq}` where `seq` is the shard's own appointment counter. A waitlist
//! entry's id is made the same way, `wl-{shard}-{seq}`, with the clinic shard's own entry
//! counter. The form is canonical (decimal, no leading zeros) so one appointment (or entry)
//! has exactly one id.

/// Longest client-chosen id (`clinic_id`, `slot_id`, `citizen_id`, `vaccine`, `batch`).
pub const CLIENT_ID_BYTES_MAX: usize = 64;

/// True when `s` is 1..=64 characters of `[A-Za-z0-9_-]` (docs/API.md, Conventions).
pub fn is_valid_client_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= CLIENT_ID_BYTES_MAX
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A parsed appointment id: the shard that owns it and its sequence number in that shard.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct AppointmentId {
    pub shard: u32,
    pub seq: u64,
}

impl AppointmentId {
    /// Parses the canonical form; anything else (including ids of shards this deployment does
    /// not have) is `None`, which the API answers as 404.
    pub fn parse(s: &str, shards: u32) -> Option<AppointmentId> {
        let (shard, seq) = parse_routed(s, "ap-", shards)?;
        Some(AppointmentId { shard, seq })
    }
}

/// A parsed waitlist entry id: the clinic's shard that keeps the entry and the entry's
/// number in that shard.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct WaitlistId {
    pub shard: u32,
    pub seq: u64,
}

impl WaitlistId {
    /// Parses the canonical form; anything else is `None` (answered 404).
    pub fn parse(s: &str, shards: u32) -> Option<WaitlistId> {
        let (shard, seq) = parse_routed(s, "wl-", shards)?;
        Some(WaitlistId { shard, seq })
    }
}

impl std::fmt::Display for WaitlistId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "wl-{}-{}", self.shard, self.seq)
    }
}

/// `{prefix}{shard}-{seq}` in canonical decimal, with `shard < shards`.
fn parse_routed(s: &str, prefix: &str, shards: u32) -> Option<(u32, u64)> {
    let rest = s.strip_prefix(prefix)?;
    let (shard_str, seq_str) = rest.split_once('-')?;
    let shard = parse_canonical_u64(shard_str)?;
    let seq = parse_canonical_u64(seq_str)?;
    let shard = u32::try_from(shard).ok()?;
    (shard < shards).then_some((shard, seq))
}

fn parse_canonical_u64(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if s.len() > 1 && s.starts_with('0') {
        return None;
    }
    s.parse().ok()
}

impl std::fmt::Display for AppointmentId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ap-{}-{}", self.shard, self.seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids() {
        assert!(is_valid_client_id("c-1_A"));
        assert!(is_valid_client_id(&"x".repeat(64)));
        assert!(!is_valid_client_id(&"x".repeat(65)));
        assert!(!is_valid_client_id(""));
        assert!(!is_valid_client_id("a b"));
        assert!(!is_valid_client_id("a/b"));
        assert!(!is_valid_client_id("é"));
    }

    #[test]
    fn appointment_id_round_trip_and_canonical() {
        let id = AppointmentId {
            shard: 7,
            seq: 12345,
        };
        let s = id.to_string();
        assert_eq!(s, "ap-7-12345");
        assert_eq!(AppointmentId::parse(&s, 64), Some(id));
        assert_eq!(AppointmentId::parse("ap-07-12345", 64), None);
        assert_eq!(AppointmentId::parse("ap-7-012", 64), None);
        assert_eq!(AppointmentId::parse("ap-64-1", 64), None);
        assert_eq!(AppointmentId::parse("ap-1", 64), None);
        assert_eq!(AppointmentId::parse("ap--1-2", 64), None);
        assert_eq!(
            AppointmentId::parse("ap-1-99999999999999999999999", 64),
            None
        );
        assert!(
            AppointmentId {
                shard: u32::MAX,
                seq: u64::MAX
            }
            .to_string()
            .len()
                <= 64
        );
    }

    #[test]
    fn waitlist_id_round_trip_and_canonical() {
        let id = WaitlistId { shard: 3, seq: 41 };
        assert_eq!(id.to_string(), "wl-3-41");
        assert_eq!(WaitlistId::parse("wl-3-41", 64), Some(id));
        assert_eq!(WaitlistId::parse("ap-3-41", 64), None);
        assert_eq!(AppointmentId::parse("wl-3-41", 64), None);
        assert_eq!(WaitlistId::parse("wl-03-41", 64), None);
        assert_eq!(WaitlistId::parse("wl-64-1", 64), None);
    }
}
