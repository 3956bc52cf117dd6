//! The webhook signature: `X-Holdfast-Signature-256: sha256=<hex HMAC-SHA256 of the body>`,
//! keyed with the bytes of `--webhook-secret-file` (one trailing newline trimmed, like the JWT
//! secret), so a receiver proves an event came from this server and was not changed.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::hex::push_hex;

type HmacSha256 = Hmac<Sha256>;

/// The shortest webhook secret accepted (an HMAC key shorter than this is guessable).
pub const SECRET_BYTES_MIN: usize = 16;

/// The key in a secret file's bytes: one trailing newline trimmed; empty or shorter than
/// [`SECRET_BYTES_MIN`] is refused.
pub fn secret_from_file_bytes(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let secret = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    if secret.len() < SECRET_BYTES_MIN {
        return Err(format!(
            "the webhook secret file holds {} bytes; use at least {SECRET_BYTES_MIN} (e.g. `head \
             -c 32 /dev/urandom | base64 > webhook-secret`)",
            secret.len()
        ));
    }
    Ok(secret.to_vec())
}

/// `sha256=` and the lower-case hex HMAC-SHA256 of `body` under `secret`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // An HMAC takes a key of any length, so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts any key length");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut text = String::with_capacity(7 + 2 * digest.len());
    text.push_str("sha256=");
    push_hex(&mut text, &digest);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_rfc_4231() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn signature_covers_every_byte() {
        let secret = b"0123456789abcdef";
        let a = signature(secret, br#"{"seq":1}"#);
        assert_ne!(a, signature(secret, br#"{"seq":1} "#));
        assert_ne!(a, signature(b"0123456789abcdeF", br#"{"seq":1}"#));
        assert_eq!(a, signature(secret, br#"{"seq":1}"#));
        assert_eq!(a.len(), 7 + 64);
    }

    #[test]
    fn secret_files_are_trimmed_and_checked() {
        assert_eq!(
            secret_from_file_bytes(b"0123456789abcdef\n").unwrap(),
            b"0123456789abcdef"
        );
        assert_eq!(
            secret_from_file_bytes(b"0123456789abcdef\n\n").unwrap(),
            b"0123456789abcdef\n",
            "one newline only"
        );
        assert!(secret_from_file_bytes(b"").is_err());
        assert!(secret_from_file_bytes(b"\n").is_err());
        assert!(secret_from_file_bytes(b"short\n").is_err());
    }
}
