//! Chunk digests and the per-store key that makes them.
//!
//! A digest is the BLAKE3 keyed hash of a chunk's raw (uncompressed) bytes. The key is
//! per store: agents receive it at enrolment so they can name chunks before uploading
//! them, and someone without it cannot test whether the box holds a given file by its hash.

use std::fmt;
use std::fs;
use std::io::Write;
#[cfg(unix)]
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Result, StoreError};

/// The name of a chunk: BLAKE3 keyed hash of its raw bytes.
///
/// Displays and parses as 64 lowercase hex digits. Serde writes it as that hex string in
/// human-readable formats (JSON) and as 32 plain bytes in binary ones (postcard catalogs).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// The 64-digit lowercase hex form (also what `Display` prints).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.to_hex())
    }
}

/// Why a string is not a digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a digest is 64 hex digits")]
pub struct ParseDigestError;

impl FromStr for Digest {
    type Err = ParseDigestError;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        let mut out = [0u8; 32];
        // Only lowercase is canonical; accept uppercase too, as hex::decode does.
        hex::decode_to_slice(s, &mut out).map_err(|_| ParseDigestError)?;
        Ok(Digest(out))
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(&self.to_hex())
        } else {
            self.0.serialize(serializer)
        }
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let s = String::deserialize(deserializer)?;
            s.parse().map_err(serde::de::Error::custom)
        } else {
            <[u8; 32]>::deserialize(deserializer).map(Digest)
        }
    }
}

/// The store's secret 32-byte BLAKE3 key. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct ChunkKey([u8; 32]);

impl ChunkKey {
    /// A new random key from the operating system's CSPRNG.
    pub fn generate() -> Self {
        use rand::RngCore;
        let mut k = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut k);
        ChunkKey(k)
    }

    /// A key from its 32 bytes (tests, or a key received from the box).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        ChunkKey(bytes)
    }

    /// The digest of a chunk's raw bytes.
    pub fn digest(&self, data: &[u8]) -> Digest {
        Digest(*blake3::keyed_hash(&self.0, data).as_bytes())
    }

    /// The key as 64 hex digits (how it travels to an enrolled agent and sits in `key`).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex digits (surrounding whitespace ignored).
    pub fn from_hex(s: &str) -> Option<Self> {
        let mut k = [0u8; 32];
        hex::decode_to_slice(s.trim(), &mut k).ok()?;
        Some(ChunkKey(k))
    }

    /// Reads a key file written by [`ChunkKey::save`].
    pub fn load(path: &Path) -> Result<Self> {
        let text = fs::read_to_string(path)
            .map_err(|e| StoreError::io("cannot read chunk key file", path, e))?;
        ChunkKey::from_hex(&text).ok_or_else(|| StoreError::InvalidKey {
            path: path.to_path_buf(),
            reason: "expected 64 hex digits".into(),
        })
    }

    /// Writes the key as hex to a new file with mode 0600, synced to disk. Refuses to
    /// overwrite an existing file: losing the key makes every digest unverifiable.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        opts.mode(0o600);
        let mut f = opts
            .open(path)
            .map_err(|e| StoreError::io("cannot create chunk key file", path, e))?;
        f.write_all(format!("{}\n", self.to_hex()).as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| StoreError::io("cannot write chunk key file", path, e))
    }
}

impl fmt::Debug for ChunkKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChunkKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_hex_round_trip_and_serde_forms() {
        let d = ChunkKey::from_bytes([7; 32]).digest(b"hello");
        assert_eq!(d.to_string().len(), 64);
        assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
        assert!("abc".parse::<Digest>().is_err());
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"{d}\""));
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
        let bin = postcard::to_allocvec(&d).unwrap();
        assert_eq!(bin.len(), 32);
        assert_eq!(postcard::from_bytes::<Digest>(&bin).unwrap(), d);
    }

    #[test]
    fn keyed_digests_differ_by_key() {
        let a = ChunkKey::from_bytes([1; 32]);
        let b = ChunkKey::from_bytes([2; 32]);
        assert_ne!(a.digest(b"x"), b.digest(b"x"));
        assert_eq!(a.digest(b"x"), a.digest(b"x"));
    }

    #[test]
    fn key_debug_is_redacted_and_file_is_private() {
        let k = ChunkKey::generate();
        assert!(!format!("{k:?}").contains(&k.to_hex()));
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("key");
        k.save(&p).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(ChunkKey::load(&p).unwrap(), k);
        assert!(k.save(&p).is_err(), "never overwrites a key");
        fs::write(&p, "nonsense").unwrap();
        assert!(matches!(
            ChunkKey::load(&p),
            Err(StoreError::InvalidKey { .. })
        ));
    }
}
