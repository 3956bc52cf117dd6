//! Lower-case hexadecimal text of bytes: the audit chain's hashes, the webhooks' signatures
//! and ids. One table lookup per half byte and one allocation per text (formatting each byte
//! with `{:02x}` allocated a string per byte: 14% of the event recorder's samples under a
//! launch).

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// `bytes` as lower-case hexadecimal, two characters a byte.
pub fn hex(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(2 * bytes.len());
    push_hex(&mut text, bytes);
    text
}

/// Appends `bytes` to `text` as lower-case hexadecimal.
pub fn push_hex(text: &mut String, bytes: &[u8]) {
    text.reserve(2 * bytes.len());
    for byte in bytes {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_lower_case_digits_a_byte() {
        assert_eq!(hex(&[]), "");
        assert_eq!(hex(&[0x00, 0x0f, 0xa0, 0xff, 0x5c]), "000fa0ff5c");
        let every: Vec<u8> = (0..=255).collect();
        let expected: String = every.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex(&every), expected);
        let mut text = String::from("sha256=");
        push_hex(&mut text, &[0xde, 0xad]);
        assert_eq!(text, "sha256=dead");
    }
}
