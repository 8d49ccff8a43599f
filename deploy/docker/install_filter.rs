//! `kubegate-install-filter [--sha256 HEX] SOURCE DEST`: the init container of the Helm
//! chart's pod. It copies kubegate's wasm filter out of kubegate's image into the
//! emptyDir stock Envoy loads it from, so Envoy needs no image of ours. With `--sha256`
//! the filter must have that SHA-256 or nothing is written (exit 1), and Envoy, which
//! finds no filter, does not start: a pinned filter or none.
//!
//! The kubegate image has no shell and no coreutils (distroless), hence this program;
//! std only, so deploy/docker/build.sh compiles it with plain `rustc`.

#![forbid(unsafe_code)]

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (expected, paths) = match args.as_slice() {
        [flag, hex, rest @ ..] if flag == "--sha256" => (Some(hex.to_ascii_lowercase()), rest),
        rest => (None, rest),
    };
    let [source, dest] = paths else {
        eprintln!("usage: kubegate-install-filter [--sha256 HEX] SOURCE DEST");
        return ExitCode::from(2);
    };
    match install(Path::new(source), Path::new(dest), expected.as_deref()) {
        Ok(digest) => {
            println!("installed {dest} (sha256 {digest})");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("kubegate-install-filter: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Copies `source` to `dest` (through a temporary file renamed into place) after
/// checking its digest; returns the digest.
fn install(source: &Path, dest: &Path, expected: Option<&str>) -> Result<String, String> {
    let bytes = std::fs::read(source).map_err(|e| format!("reading {}: {e}", source.display()))?;
    let digest = hex(&sha256(&bytes));
    if let Some(expected) = expected {
        if expected != digest {
            return Err(format!("{} has sha256 {digest}, not the pinned {expected}: not installed", source.display()));
        }
    }
    let tmp = dest.with_extension("part");
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, dest)
    };
    write().map_err(|e| format!("writing {}: {e}", dest.display()))?;
    Ok(digest)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 (FIPS 180-4). build.sh checks it against `sha256sum` on the filter itself.
fn sha256(data: &[u8]) -> [u8; 32] {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98,
        0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
        0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8,
        0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
        0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819,
        0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
        0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];
    let mut h: [u32; 8] =
        [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];
    let mut message = data.to_vec();
    message.push(0x80);
    while message.len() % 64 != 56 {
        message.push(0);
    }
    message.extend_from_slice(&((data.len() as u64) * 8).to_be_bytes());
    for block in message.chunks_exact(64) {
        let mut w = [0u32; 64];
        for (i, word) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16].wrapping_add(s0).wrapping_add(w[i - 7]).wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut hh] = h;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = hh.wrapping_add(s1).wrapping_add(ch).wrapping_add(K[i]).wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            (hh, g, f, e, d, c, b, a) = (g, f, e, d.wrapping_add(t1), c, b, a, t1.wrapping_add(t2));
        }
        for (state, value) in h.iter_mut().zip([a, b, c, d, e, f, g, hh]) {
            *state = state.wrapping_add(value);
        }
    }
    let mut out = [0u8; 32];
    for (chunk, word) in out.chunks_exact_mut(4).zip(h) {
        chunk.copy_from_slice(&word.to_be_bytes());
    }
    out
}
