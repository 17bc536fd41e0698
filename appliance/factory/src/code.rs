//! Human-readable secrets: claim codes and generated passwords.
//!
//! Both are drawn from the operating system's CSPRNG over an alphabet without the characters
//! people confuse when reading a label or a screen aloud (0/O, 1/l/I), in dash-separated groups.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand::Rng;
use rand::rngs::OsRng;

/// 32 symbols, so every character carries exactly 5 bits.
pub const READABLE_ALPHABET: &[u8; 32] = b"abcdefghijkmnpqrstuvwxyz23456789";

/// Generates `groups` groups of `group_len` characters from [`READABLE_ALPHABET`] joined by
/// dashes. Entropy is `5 * groups * group_len` bits.
pub fn generate_readable_secret(groups: usize, group_len: usize) -> String {
    let mut rng = OsRng;
    let mut out = String::with_capacity(groups * (group_len + 1));
    for g in 0..groups {
        if g > 0 {
            out.push('-');
        }
        for _ in 0..group_len {
            let i = rng.gen_range(0..READABLE_ALPHABET.len());
            out.push(char::from(READABLE_ALPHABET[i]));
        }
    }
    out
}

/// Hashes a secret with Argon2id (PHC string, random salt).
pub fn hash_secret(secret: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    Ok(Argon2::default()
        .hash_password(secret.as_bytes(), &salt)?
        .to_string())
}

/// Checks a secret against an Argon2 PHC string. The final comparison is constant-time.
/// A malformed hash never matches.
pub fn verify_secret(secret: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default()
            .verify_password(secret.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// A box's claim code: printed on its label, never stored in clear on the box.
///
/// Four groups of four characters: 80 bits from the CSPRNG.
#[derive(Clone, PartialEq, Eq)]
pub struct ClaimCode(String);

impl ClaimCode {
    pub fn generate() -> Self {
        ClaimCode(generate_readable_secret(4, 4))
    }

    /// Normalises what a person typed: case, spaces and dashes do not matter.
    pub fn parse(typed: &str) -> Option<Self> {
        let chars: Vec<char> = typed
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '-')
            .map(|c| c.to_ascii_lowercase())
            .collect();
        if chars.len() != 16
            || !chars
                .iter()
                .all(|c| c.is_ascii() && READABLE_ALPHABET.contains(&(*c as u8)))
        {
            return None;
        }
        let groups: Vec<String> = chars.chunks(4).map(|g| g.iter().collect()).collect();
        Some(ClaimCode(groups.join("-")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> Result<String, argon2::password_hash::Error> {
        hash_secret(&self.0)
    }
}

impl std::fmt::Debug for ClaimCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClaimCode(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readable_secret_has_groups_and_only_unambiguous_characters() {
        let s = generate_readable_secret(4, 5);
        assert_eq!(s.len(), 4 * 5 + 3);
        for (i, part) in s.split('-').enumerate() {
            assert_eq!(part.len(), 5, "group {i} of {s}");
            assert!(part.bytes().all(|b| READABLE_ALPHABET.contains(&b)), "{s}");
        }
        for bad in ['0', 'o', '1', 'l', 'I', 'O'] {
            assert!(!s.contains(bad));
        }
    }

    #[test]
    fn readable_secrets_differ() {
        let a = generate_readable_secret(4, 5);
        let b = generate_readable_secret(4, 5);
        assert_ne!(a, b);
    }

    #[test]
    fn claim_code_parse_normalises_typing() {
        let c = ClaimCode::generate();
        let typed = c.as_str().to_uppercase().replace('-', " ");
        assert_eq!(ClaimCode::parse(&typed), Some(c.clone()));
        assert_eq!(ClaimCode::parse("abcd"), None);
        assert_eq!(
            ClaimCode::parse("abcd-efgh-ijkm-npq0"),
            None,
            "0 is not in the alphabet"
        );
        assert!(
            !format!("{c:?}").contains(c.as_str()),
            "Debug must not reveal the code"
        );
    }

    #[test]
    fn hash_verifies_only_the_right_secret() {
        let c = ClaimCode::generate();
        let h = c.hash().unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_secret(c.as_str(), &h));
        assert!(!verify_secret("abcd-efgh-ijkm-npqr", &h));
        assert!(!verify_secret(c.as_str(), "not a hash"));
    }
}
