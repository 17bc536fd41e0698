//! abri-store: the backup store of the Abri box — chunker, chunk store, catalogs,
//! snapshots, prune, GC and verify. A library with no network and no async runtime; every
//! call blocks on the file system (run it on dedicated threads or `spawn_blocking`).
//!
//! # The public API
//!
//! Naming chunks ([`key`]):
//! - [`Digest`]: BLAKE3 keyed hash of a chunk's raw bytes; hex `Display`/`FromStr`, serde
//!   as hex in JSON and as 32 bytes in postcard.
//! - [`ChunkKey`]: the per-store secret; `generate`, `digest(&[u8])`, `to_hex`/`from_hex`,
//!   `load`/`save` (mode 0600). `Debug` is redacted.
//!
//! Chunk bytes ([`chunk`]): [`encode_chunk`]`(raw, level) -> Vec<u8>` (the agent) and
//! [`decode_chunk`]`(bytes, key, expected) -> Result<Vec<u8>>` (both sides): a 12-byte
//! header then raw or zstd payload, identical on the wire and on disk.
//!
//! Cutting data (agent side):
//! - [`ChunkerParams`] (`DEFAULT` = 512 KiB / 2 MiB / 8 MiB) and the push-based
//!   [`Chunker`] (FastCDC 2020).
//! - [`FilePacker`]: `begin_file(id)`, `write(&[u8])`, `skip_hole(offset)`, `end_file()`,
//!   `finish()`, and `next_output() -> Option<Packed>` giving [`PackedChunk`]s (raw bytes +
//!   digest) and [`PackedFile`]s (`id`, `size`, `extents`), chunks always before the files
//!   that use them.
//!
//! Catalogs ([`catalog`]): [`Entry`], [`EntryKind`], [`Extent`], [`WindowsMeta`];
//! [`validate_path`] and [`path_cmp`] (catalog order); [`CatalogWriter`] (`push`,
//! `take_chunks`, `finish -> FinishedCatalog { digests, chunks }`); [`CatalogReader`]
//! (an iterator of `Result<Entry>`, plus `find(path)` for a merge) over any
//! [`ChunkSource`] (the store on the box, HTTP on the agent).
//!
//! The box's store ([`store`]): [`ChunkStore`] — `create`, `open`, `with_reserve`,
//! `insert_encoded -> Inserted { new, stored_bytes }`, `has`, `missing`, `read`,
//! `read_encoded`, `stored_size`, `sync`, `free_space`, `chunk_path`, `key`, `root`.
//!
//! Snapshots ([`snapshot`]): [`SnapshotManifest`], [`SnapshotStats`], [`SnapshotKind`];
//! [`commit_snapshot`], [`list_machines`], [`list_snapshots`], [`load_snapshot`],
//! [`delete_snapshot`] (prune only), [`new_snapshot_id`], [`next_snapshot_id`],
//! [`validate_id`].
//!
//! Images ([`image`]): [`ImageInfo`] / [`ImageVolume`] (the manifest's `images`),
//! [`ImageSegments`] (the agent cuts chunk slots into segment entries),
//! [`check_image_entries`] (commit), [`ImageReader`] (random access for browsing).
//!
//! Maintenance: [`select_to_keep`] with [`RetentionPolicy`] and [`SnapshotInfo`];
//! [`gc()`] -> [`GcReport`]; [`verify()`] -> [`VerifyReport`].
//!
//! Errors: one [`StoreError`] (see [`error`] for how the HTTP layer should map it).
//!
//! # A backup, end to end
//!
//! ```
//! use abri_store::*;
//!
//! # fn main() -> Result<(), StoreError> {
//! # let dir = tempfile::tempdir().unwrap();
//! let store = ChunkStore::create(&dir.path().join("store"))?.with_reserve(0);
//!
//! // Agent: pack files into chunks; upload the chunks the box lacks.
//! let mut packer = FilePacker::new(store.key().clone(), ChunkerParams::DEFAULT);
//! let mut entry = Entry::new("notes.txt", EntryKind::File);
//! packer.begin_file(0)?;
//! packer.write(b"hello, world")?;
//! packer.end_file()?;
//! packer.finish()?;
//! while let Some(out) = packer.next_output() {
//!     match out {
//!         Packed::Chunk(c) => {
//!             if !store.missing(&[c.digest]).is_empty() {
//!                 // The box verifies (decode + hash) every chunk it stores.
//!                 store.insert_encoded(&c.digest, &encode_chunk(&c.data, 3))?;
//!             }
//!         }
//!         Packed::File(f) => {
//!             entry.size = f.size;
//!             entry.extents = f.extents;
//!         }
//!     }
//! }
//!
//! // Agent: the catalog, in path order, stored as chunks too.
//! let mut catalog = CatalogWriter::new(store.key().clone(), ChunkerParams::DEFAULT, 3);
//! catalog.push(&entry)?;
//! let catalog = catalog.finish();
//! for c in &catalog.chunks {
//!     store.insert_encoded(&c.digest, &c.bytes)?;
//! }
//!
//! // Box: commit. Visible only now, and only if every chunk is there.
//! let manifest = SnapshotManifest {
//!     format: 1,
//!     id: new_snapshot_id(std::time::SystemTime::now()),
//!     machine: "pc-1".into(),
//!     kind: SnapshotKind::Files,
//!     plan: "files".into(),
//!     started: 1_790_000_000,
//!     finished: 1_790_000_060,
//!     full: true,
//!     catalog: catalog.digests,
//!     stats: SnapshotStats::default(),
//!     source: "/home".into(),
//!     host: "pc-1".into(),
//!     images: Vec::new(),
//!     without_snapshot: false,
//! };
//! commit_snapshot(&manifest, &store)?;
//!
//! // Restore: read the catalog, then each extent's chunk.
//! for entry in CatalogReader::new(&store, manifest.catalog.clone()) {
//!     let entry = entry?;
//!     let e = entry.extents[0];
//!     let chunk = store.read(&e.digest)?;
//!     let start = e.chunk_offset as usize;
//!     assert_eq!(&chunk[start..start + e.len as usize], b"hello, world");
//! }
//! assert!(verify(&store)?.is_clean());
//! # Ok(())
//! # }
//! ```
//!
//! On-disk formats: `docs/formats.md` ("Backup store"). Durability: see [`store`].

pub mod aligned;
pub mod catalog;
pub mod chunk;
pub mod chunker;
mod durable;
pub mod error;
mod gate;
pub mod gc;
pub mod image;
pub mod key;
pub mod packer;
pub mod prune;
pub mod snapshot;
pub mod store;
#[cfg(test)]
mod testutil;
pub mod verify;

pub use aligned::{ALIGN, AlignedBuf, PlacedChunk};
pub use catalog::{
    CatalogReader, CatalogWriter, ChunkSource, EncodedChunk, Entry, EntryKind, Extent,
    FinishedCatalog, WindowsMeta, path_cmp, validate_path,
};
pub use chunk::{
    CHUNK_HEADER_LEN, MAX_CHUNK_LEN, decode_chunk, decode_chunk_into, decode_chunk_placed,
    encode_chunk, encode_chunk_into,
};
pub use chunker::{Chunker, ChunkerParams};
pub use error::{ChunkDefect, StoreError};
pub use gc::{GcReport, gc};
pub use image::{
    FileState, ImageInfo, ImageReader, ImageSegments, ImageVolume, check_image_entries,
    image_dir_entry, segment_path, validate_image_name,
};
pub use key::{ChunkKey, Digest, ParseDigestError};
pub use packer::{FilePacker, Packed, PackedChunk, PackedFile};
pub use prune::{RetentionPolicy, SnapshotInfo, select_to_keep};
pub use snapshot::{
    SnapshotKind, SnapshotManifest, SnapshotStats, commit_snapshot, delete_snapshot, list_machines,
    list_snapshots, load_snapshot, new_snapshot_id, next_snapshot_id, validate_id,
};
pub use store::{ChunkStore, Inserted};
pub use verify::{CorruptChunk, DamagedSnapshot, VerifyReport, verify};
