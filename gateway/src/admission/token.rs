//! Admission tokens: `<ticket>.<until_ms>.<base64url mac>`, the MAC an HMAC-SHA256 over the
//! caller's `sub`, the ticket and the instant the admission ends, so a token is good only
//! for the caller it was issued to, only until its end, and cannot be made or altered
//! without the key.
//!
//! The key is drawn at random when the server starts, not derived from the JWT secret (as
//! the QR key is): the record of which tokens already booked lives in memory (see
//! [`super::waiting_room`]), so a token that outlived a restart could book a second time.
//! With a key of its own per process, every token ends with the process that issued it.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use holdfast_engine::clock::UnixMs;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Longest token accepted: a ticket (16 hex digits), an instant (at most 20 digits), 43
/// characters of MAC and two dots, with room to spare. Anything longer is not ours.
pub const ADMISSION_TOKEN_BYTES_MAX: usize = 128;
/// Random bytes of the key (256 bits, SHA-256's block-sized security).
const KEY_BYTES: usize = 32;
/// Domain separator of the signed fields.
const DOMAIN: &[u8] = b"holdfast admission token v1\0";

/// What a token vouches for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    pub ticket: String,
    pub until_ms: UnixMs,
}

/// The key that signs and checks this process's admission tokens.
pub struct TokenKey {
    key: [u8; KEY_BYTES],
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(<redacted>)")
    }
}

impl TokenKey {
    /// A fresh random key.
    ///
    /// # Panics
    ///
    /// If the operating system's random number generator is unavailable.
    pub fn random() -> TokenKey {
        let mut key = [0u8; KEY_BYTES];
        getrandom::fill(&mut key).expect("the OS random number generator is unavailable");
        TokenKey { key }
    }

    fn mac(&self, sub: &str, ticket: &str, until_ms: UnixMs) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(DOMAIN);
        // Each field with its length in front, so no field can slide into its neighbour.
        for part in [sub.as_bytes(), ticket.as_bytes()] {
            mac.update(&u32::try_from(part.len()).unwrap_or(u32::MAX).to_be_bytes());
            mac.update(part);
        }
        mac.update(&until_ms.to_be_bytes());
        mac
    }

    /// A token for `sub`, admitted with `ticket` until `until_ms`.
    pub fn sign(&self, sub: &str, ticket: &str, until_ms: UnixMs) -> String {
        let tag = self.mac(sub, ticket, until_ms).finalize().into_bytes();
        format!("{ticket}.{until_ms}.{}", URL_SAFE_NO_PAD.encode(tag))
    }

    /// What `token` vouches for, if it was signed by this key for `sub`. Expiry is the
    /// caller's to check (it reads the node's clock).
    pub fn verify(&self, token: &str, sub: &str) -> Option<Admitted> {
        if token.len() > ADMISSION_TOKEN_BYTES_MAX {
            return None;
        }
        let mut parts = token.split('.');
        let (Some(ticket), Some(until), Some(tag), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let until_ms: UnixMs = until.parse().ok()?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        // Constant time: the answer's timing says nothing about how much of a forgery fits.
        self.mac(sub, ticket, until_ms).verify_slice(&tag).ok()?;
        Some(Admitted {
            ticket: ticket.to_owned(),
            until_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_verifies_for_its_caller_only() {
        let key = TokenKey::random();
        let token = key.sign("citizen:a", "00ff", 1_000);
        let admitted = key.verify(&token, "citizen:a").unwrap();
        assert_eq!(admitted.ticket, "00ff");
        assert_eq!(admitted.until_ms, 1_000);
        assert_eq!(key.verify(&token, "citizen:b"), None);
        assert_eq!(TokenKey::random().verify(&token, "citizen:a"), None);
    }

    #[test]
    fn altered_and_malformed_tokens_are_refused() {
        let key = TokenKey::random();
        let token = key.sign("s", "00ff", 1_000);
        let (_, mac) = token.rsplit_once('.').unwrap();
        for bad in [
            format!("00fe.1000.{mac}"),
            format!("00ff.9999.{mac}"),
            format!("00ff.1000.{mac}x"),
            format!("{token}.x"),
            "00ff.1000".to_owned(),
            String::new(),
            "x".repeat(ADMISSION_TOKEN_BYTES_MAX + 1),
        ] {
            assert_eq!(key.verify(&bad, "s"), None, "{bad:?}");
        }
    }
}
