//! QR tokens: an HMAC of the appointment id made with a key derived from the server secret,
//! so a clinic can tell a real token from a forged or altered one.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

pub struct QrKey {
    key: Vec<u8>,
}

impl QrKey {
    /// Derives the QR key from the server secret (a separate key from the JWT one, so a
    /// token of one kind is never valid as the other).
    pub fn derive(secret: &[u8]) -> QrKey {
        let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
        mac.update(b"holdfast qr key v1");
        QrKey {
            key: mac.finalize().into_bytes().to_vec(),
        }
    }

    fn mac(&self, appointment_id: &str) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        mac.update(b"qr:v1:");
        mac.update(appointment_id.as_bytes());
        mac
    }

    /// `{appointment_id}.{base64url(hmac)}`
    pub fn token(&self, appointment_id: &str) -> String {
        let tag = self.mac(appointment_id).finalize().into_bytes();
        format!("{appointment_id}.{}", URL_SAFE_NO_PAD.encode(tag))
    }

    /// The appointment id a genuine token names; `None` for a forged or altered one.
    pub fn verify<'t>(&self, token: &'t str) -> Option<&'t str> {
        let (id, tag) = token.rsplit_once('.')?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        self.mac(id).verify_slice(&tag).ok()?;
        Some(id)
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

    #[test]
    fn tokens_verify_and_forgeries_do_not() {
        let key = QrKey::derive(b"secret");
        let token = key.token("ap-3-17");
        assert_eq!(key.verify(&token), Some("ap-3-17"));
        assert_eq!(key.verify(&token.replace("ap-3-17", "ap-3-18")), None);
        assert_eq!(QrKey::derive(b"other").verify(&token), None);
        assert_eq!(key.verify("garbage"), None);
        assert!(QrKey::svg(&token).unwrap().starts_with("<?xml"));
    }
}
