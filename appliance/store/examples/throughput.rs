//! Measures chunk + hash (FilePacker) and compress (encode_chunk) speed on one core.
//! Run: `cargo run --release -p abri-store --example throughput [MiB] [zstd level]`.

use std::time::Instant;

use abri_store::{ChunkKey, ChunkerParams, FilePacker, Packed, encode_chunk};

fn main() {
    let mib: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(256);
    let level: i32 = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(3);
    let random = noise(mib << 20, 1);
    // Text-like data: words from a small vocabulary, compressible about 3-4x by zstd.
    let words = [
        "backup", "chunk", "store", "the", "of", "snapshot", "file", "and", "data", "box",
    ];
    let mut text = Vec::with_capacity(mib << 20);
    let mut i = 0usize;
    while text.len() < mib << 20 {
        text.extend_from_slice(words[(random[i] as usize) % words.len()].as_bytes());
        text.push(if random[i + 1] < 20 { b'\n' } else { b' ' });
        i += 2;
    }
    text.truncate(mib << 20);
    for (name, data) in [("random", &random), ("text", &text)] {
        measure(name, data, level);
    }
}

fn measure(name: &str, data: &[u8], level: i32) {
    let key = ChunkKey::from_bytes([1; 32]);
    let mut packer = FilePacker::new(key, ChunkerParams::DEFAULT);
    let (mut pack, mut compress) = (0f64, 0f64);
    let (mut chunks, mut stored) = (0usize, 0usize);
    // Chunks are encoded and dropped as they come, as the agent's pipeline does, so memory
    // is reused rather than every chunk faulting in fresh pages.
    let mut encode = |packer: &mut FilePacker| {
        let t = Instant::now();
        while let Some(o) = packer.next_output() {
            if let Packed::Chunk(c) = o {
                chunks += 1;
                stored += encode_chunk(&c.data, level).len();
            }
        }
        compress += t.elapsed().as_secs_f64();
    };
    packer.begin_file(0).unwrap();
    for piece in data.chunks(1 << 20) {
        let t = Instant::now();
        packer.write(piece).unwrap();
        pack += t.elapsed().as_secs_f64();
        encode(&mut packer);
    }
    let t = Instant::now();
    packer.end_file().unwrap();
    packer.finish().unwrap();
    pack += t.elapsed().as_secs_f64();
    encode(&mut packer);
    let mb = data.len() as f64 / 1e6;
    println!(
        "{name:>6}: {chunks} chunks; chunk+hash {:.0} MB/s, zstd-{level} {:.0} MB/s, together \
         {:.0} MB/s on one core; stored {:.1}%",
        mb / pack,
        mb / compress,
        mb / (pack + compress),
        100.0 * stored as f64 / data.len() as f64
    );
}

fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(n);
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(n);
    v
}
