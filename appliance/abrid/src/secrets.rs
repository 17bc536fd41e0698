//! Secrets the box generates: admin passwords, session and API tokens.
//!
//! Everything comes from the operating system's CSPRNG. Tokens are kept only as SHA-256
//! digests (they are long random strings, so a fast hash is enough); passwords as Argon2id.

use rand::RngCore;
use sha2::{Digest, Sha256};

/// An admin password: 4 groups of 5 readable characters, 100 bits.
pub fn generate_password() -> String {
    abri_factory::generate_readable_secret(4, 5)
}

/// 256 random bits as lower-case hex.
pub fn generate_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

pub fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Constant-time equality of two strings (lengths are not secret).
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_have_at_least_96_bits_and_differ() {
        let p = generate_password();
        let symbols = p.chars().filter(|c| *c != '-').count();
        assert!(symbols * 5 >= 96, "{symbols} symbols of 5 bits");
        assert_ne!(p, generate_password());
    }

    #[test]
    fn tokens_are_256_bits_of_hex() {
        let t = generate_token();
        assert_eq!(t.len(), 64);
        assert!(t.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(t, generate_token());
    }

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "abcd"));
    }
}
