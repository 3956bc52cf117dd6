//! QR tokens: `<appointment_id>.<base64url mac>`, the MAC an HMAC-SHA256 over the fields
//! staff must trust (appointment, clinic, slot, vaccine, citizen), so a clinic can tell a real
//! token from a forged or altered one, and one of another clinic from its own.
//!
//! # Keys and rotation
//!
//! A [`QrKeyring`] holds up to [`QR_KEYS_MAX`] keys, newest first: the first signs every new
//! token, every one of them verifies. By default the ring is one key derived from the JWT
//! secret (a separate key from the JWT one, so a token of one kind is never valid as the
//! other). An operator who wants to rotate gives `--qr-key-file F`: one key per line, newest
//! first (blank lines and `#` comments ignored), each at least [`QR_KEY_BYTES_MIN`] bytes.
//! To rotate: prepend a new key and restart; tokens signed under the old key still verify
//! while it stays in the file; remove it once every appointment it signed has been
//! administered or its slot is over.
//!
//! # What is signed
//!
//! The MAC covers a domain separator and each field with its length in front (4 bytes, big
//! endian), so no two different sets of fields give the same input: a field cannot slide
//! into its neighbour (`("ab", "c")` and `("a", "bc")` sign differently). Verifying needs the
//! appointment as the server has it: the caller reads it by the id the token names, then
//! [`QrKeyring::verify`] recomputes the MAC over its fields with each key.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use holdfast_engine::view::AppointmentView;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Most keys a ring holds: the signing key and the older ones still accepted. A rotation
/// needs two; a few more let an operator rotate again before the oldest key's tokens are
/// used up. Each one costs an HMAC when a token does not verify under the newer ones.
pub const QR_KEYS_MAX: usize = 8;
/// Shortest key accepted from a key file, in bytes: 128 bits of a random text key (a line of
/// `openssl rand -base64 32` is 44).
pub const QR_KEY_BYTES_MIN: usize = 16;
/// Longest token accepted: an appointment id (at most 64 characters, docs/API.md), the dot
/// and 43 characters of MAC, with room to spare. Anything longer is not a token of ours.
pub const QR_TOKEN_BYTES_MAX: usize = 128;
/// Length of the MAC (HMAC-SHA256).
const MAC_BYTES: usize = 32;
/// Domain separator of the signed fields (the version of what is signed).
const DOMAIN: &[u8] = b"holdfast qr token v2\0";

/// The fields a token vouches for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QrFields<'a> {
    pub appointment_id: &'a str,
    pub clinic_id: &'a str,
    pub slot_id: &'a str,
    pub vaccine: &'a str,
    pub citizen_id: &'a str,
}

impl<'a> QrFields<'a> {
    /// The fields of `a` its QR token vouches for (`id`: its id, as rendered).
    pub fn of(a: &'a AppointmentView, id: &'a str) -> QrFields<'a> {
        QrFields {
            appointment_id: id,
            clinic_id: &a.clinic_id,
            slot_id: &a.slot_id,
            vaccine: &a.vaccine,
            citizen_id: &a.citizen_id,
        }
    }

    /// The fields in signing order.
    fn parts(&self) -> [&str; 5] {
        [
            self.appointment_id,
            self.clinic_id,
            self.slot_id,
            self.vaccine,
            self.citizen_id,
        ]
    }
}

/// One key of a ring.
#[derive(Clone)]
struct QrKey {
    key: [u8; MAC_BYTES],
}

impl QrKey {
    /// A key from secret bytes of any length (hashed to a fixed-size key, domain-separated
    /// from every other use of the same bytes).
    fn derive(secret: &[u8]) -> QrKey {
        let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
        mac.update(b"holdfast qr key v1");
        QrKey {
            key: mac.finalize().into_bytes().into(),
        }
    }

    fn mac(&self, fields: &QrFields<'_>) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(DOMAIN);
        for part in fields.parts() {
            let len = u32::try_from(part.len()).unwrap_or(u32::MAX);
            mac.update(&len.to_be_bytes());
            mac.update(part.as_bytes());
        }
        mac
    }
}

/// Why a key file was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QrKeyFileError {
    Empty,
    TooMany { keys: usize },
    TooShort { line: usize },
}

impl std::fmt::Display for QrKeyFileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QrKeyFileError::Empty => {
                f.write_str("the QR key file holds no key: put one key per line, newest first")
            }
            QrKeyFileError::TooMany { keys } => write!(
                f,
                "the QR key file holds {keys} keys, more than {QR_KEYS_MAX}: remove the oldest \
                 (last) ones whose tokens have all been administered or expired"
            ),
            QrKeyFileError::TooShort { line } => write!(
                f,
                "line {line} of the QR key file is shorter than {QR_KEY_BYTES_MIN} bytes: use a \
                 random key, e.g. `openssl rand -base64 32`"
            ),
        }
    }
}

impl std::error::Error for QrKeyFileError {}

/// The server's QR keys, newest first: the first signs, every one verifies.
#[derive(Clone)]
pub struct QrKeyring {
    keys: Vec<QrKey>,
}

impl std::fmt::Debug for QrKeyring {
    /// Never prints a key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "QrKeyring({} keys)", self.keys.len())
    }
}

impl QrKeyring {
    /// The default ring: one key derived from the server secret.
    pub fn derive(secret: &[u8]) -> QrKeyring {
        QrKeyring {
            keys: vec![QrKey::derive(secret)],
        }
    }

    /// The ring of a `--qr-key-file`: one key per line, newest first; surrounding
    /// whitespace is trimmed, blank lines and lines starting with `#` are skipped.
    pub fn from_key_file(text: &str) -> Result<QrKeyring, QrKeyFileError> {
        let mut keys = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if line.len() < QR_KEY_BYTES_MIN {
                return Err(QrKeyFileError::TooShort { line: i + 1 });
            }
            keys.push(QrKey::derive(line.as_bytes()));
        }
        match keys.len() {
            0 => Err(QrKeyFileError::Empty),
            n if n > QR_KEYS_MAX => Err(QrKeyFileError::TooMany { keys: n }),
            _ => Ok(QrKeyring { keys }),
        }
    }

    /// How many keys verify.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Never true: a ring has a signing key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// `{appointment_id}.{base64url(hmac)}`, signed with the newest key.
    pub fn token(&self, fields: &QrFields<'_>) -> String {
        let tag = self.keys[0].mac(fields).finalize().into_bytes();
        format!("{}.{}", fields.appointment_id, URL_SAFE_NO_PAD.encode(tag))
    }

    /// The appointment id a well-formed token names (the caller reads that appointment and
    /// then calls [`QrKeyring::verify`]); `None` for anything that cannot be a token.
    pub fn appointment_id(token: &str) -> Option<&str> {
        if token.len() > QR_TOKEN_BYTES_MAX {
            return None;
        }
        let (id, tag) = token.rsplit_once('.')?;
        let decoded = URL_SAFE_NO_PAD.decode(tag).ok()?;
        (!id.is_empty() && decoded.len() == MAC_BYTES).then_some(id)
    }

    /// Whether `token` is a token some key of the ring made for exactly these fields (in
    /// constant time per key).
    pub fn verify(&self, token: &str, fields: &QrFields<'_>) -> bool {
        let Some(id) = QrKeyring::appointment_id(token) else {
            return false;
        };
        if id != fields.appointment_id {
            return false;
        }
        let Some((_, tag)) = token.rsplit_once('.') else {
            return false;
        };
        let Ok(tag) = URL_SAFE_NO_PAD.decode(tag) else {
            return false;
        };
        self.keys
            .iter()
            .any(|key| key.mac(fields).verify_slice(&tag).is_ok())
    }

    /// The token as an SVG QR code.
    pub fn svg(token: &str) -> Result<String, String> {
        let code = qrcode::QrCode::new(token.as_bytes()).map_err(|e| e.to_string())?;
        Ok(code
            .render::<qrcode::render::svg::Color>()
            .min_dimensions(200, 200)
            .build())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields<'a>(id: &'a str, clinic: &'a str) -> QrFields<'a> {
        QrFields {
            appointment_id: id,
            clinic_id: clinic,
            slot_id: "s-1",
            vaccine: "pfz",
            citizen_id: "c-1",
        }
    }

    #[test]
    fn tokens_verify_and_forgeries_do_not() {
        let ring = QrKeyring::derive(b"secret");
        let f = fields("ap-3-17", "k-1");
        let token = ring.token(&f);
        assert_eq!(QrKeyring::appointment_id(&token), Some("ap-3-17"));
        assert!(ring.verify(&token, &f));
        // Another appointment, another clinic, another key, garbage, truncation.
        assert!(!ring.verify(
            &token.replace("ap-3-17", "ap-3-18"),
            &fields("ap-3-18", "k-1")
        ));
        assert!(!ring.verify(&token, &fields("ap-3-17", "k-2")));
        assert!(!QrKeyring::derive(b"other").verify(&token, &f));
        assert!(!ring.verify("garbage", &f));
        assert!(!ring.verify(&token[..token.len() - 1], &f));
        assert!(!ring.verify(&format!("{token}A"), &f));
        assert!(QrKeyring::appointment_id(&"a".repeat(QR_TOKEN_BYTES_MAX + 1)).is_none());
        assert!(QrKeyring::svg(&token).unwrap().starts_with("<?xml"));
    }

    #[test]
    fn fields_cannot_slide_into_each_other() {
        let ring = QrKeyring::derive(b"secret");
        let a = QrFields {
            slot_id: "ab",
            vaccine: "c",
            ..fields("ap-1-1", "k")
        };
        let b = QrFields {
            slot_id: "a",
            vaccine: "bc",
            ..fields("ap-1-1", "k")
        };
        assert_ne!(ring.token(&a), ring.token(&b));
        assert!(!ring.verify(&ring.token(&a), &b));
    }

    #[test]
    fn a_rotated_ring_signs_with_the_new_key_and_verifies_with_both() {
        let a = "key-a-0123456789abcdef";
        let b = "key-b-0123456789abcdef";
        let old = QrKeyring::from_key_file(&format!("{a}\n")).unwrap();
        let rotated = QrKeyring::from_key_file(&format!("# rotated\n{b}\n\n{a}\n")).unwrap();
        let only_new = QrKeyring::from_key_file(b).unwrap();
        let f = fields("ap-2-5", "k-1");
        let under_a = old.token(&f);
        assert!(rotated.verify(&under_a, &f));
        assert!(!only_new.verify(&under_a, &f));
        let under_b = rotated.token(&f);
        assert_ne!(under_a, under_b);
        assert!(only_new.verify(&under_b, &f));
        assert!(!old.verify(&under_b, &f));
        assert_eq!(rotated.len(), 2);
    }

    #[test]
    fn key_files_are_bounded_and_checked() {
        assert_eq!(
            QrKeyring::from_key_file("# nothing\n\n").unwrap_err(),
            QrKeyFileError::Empty
        );
        assert_eq!(
            QrKeyring::from_key_file("0123456789abcdef\nshort\n").unwrap_err(),
            QrKeyFileError::TooShort { line: 2 }
        );
        let many: String = (0..=QR_KEYS_MAX)
            .map(|i| format!("key-{i:02}-0123456789abcdef\n"))
            .collect();
        assert_eq!(
            QrKeyring::from_key_file(&many).unwrap_err(),
            QrKeyFileError::TooMany {
                keys: QR_KEYS_MAX + 1
            }
        );
    }
}
