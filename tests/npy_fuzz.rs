//! A bounded fuzzing harness for the `.npy` reader: structured generation (valid files of random
//! versions, dtypes, shapes and payloads) followed by random mutations (bit flips, byte
//! overwrites, truncation, insertion, header-token substitution, header-length corruption).
//! Every input must give a tensor or an `Error::Npy`, never a panic, and no single allocation
//! may exceed what the input's size justifies.
//!
//! CI runs `SUBPRUNE_FUZZ_CASES` inputs (default 10 000, a second or two); the long run:
//! `SUBPRUNE_FUZZ_CASES=1000000 SUBPRUNE_FUZZ_SEED=1 cargo test --release --test npy_fuzz -- --nocapture`.
//! Figures are in docs/FUZZING.md.

use std::path::Path;
use std::sync::atomic::Ordering;

use subprune::rng::Rng;

#[path = "common/fuzz_alloc.rs"]
mod fuzz_support;
use fuzz_support::{env_or, LARGEST, TRACK};

const TOKENS: &[&str] = &[
    "'descr'",
    "'<f4'",
    "'<f8'",
    "'>f4'",
    "'|u1'",
    "'fortran_order'",
    "True",
    "False",
    "'shape'",
    "()",
    "(0,)",
    "(1,)",
    "(18446744073709551615,)",
    "(99999999999, 99999999999)",
    "(4294967296, 4294967296, 4)",
    "{",
    "}",
    ":",
    ",",
    "(",
    ")",
    "'",
    "\"",
    "\u{e9}",
    "\n",
    " ",
    "-1",
    "1e3",
];

fn pick<'a, T>(rng: &mut Rng, items: &'a [T]) -> &'a T {
    &items[(rng.next_u64() % items.len() as u64) as usize]
}

/// A well-formed file: version 1, 2 or 3, `<f4` or another dtype, 0–4 dimensions.
fn valid(rng: &mut Rng) -> Vec<u8> {
    let dims = (rng.next_u64() % 5) as usize;
    let shape: Vec<usize> = (0..dims).map(|_| (rng.next_u64() % 5) as usize).collect();
    let descr = *pick(rng, &["<f4", "<f4", "<f4", "=f4", "<f8", "|u1"]);
    let shape_text = match shape.len() {
        0 => "()".to_string(),
        1 => format!("({},)", shape[0]),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let header =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_text}, }}\n");
    let version = 1 + (rng.next_u64() % 3) as u8;
    let mut out = b"\x93NUMPY".to_vec();
    out.extend_from_slice(&[version, 0]);
    if version == 1 {
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    }
    out.extend_from_slice(header.as_bytes());
    let count: usize = shape.iter().product();
    for _ in 0..count * 4 {
        out.push(rng.next_u64() as u8);
    }
    out
}

fn mutate(rng: &mut Rng, bytes: &mut Vec<u8>) {
    let rounds = 1 + rng.next_u64() % 4;
    for _ in 0..rounds {
        let len = bytes.len().max(1) as u64;
        match rng.next_u64() % 8 {
            0 if !bytes.is_empty() => {
                let i = (rng.next_u64() % len) as usize;
                bytes[i] ^= 1 << (rng.next_u64() % 8);
            }
            1 if !bytes.is_empty() => {
                let i = (rng.next_u64() % len) as usize;
                bytes[i] = rng.next_u64() as u8;
            }
            2 => bytes.truncate((rng.next_u64() % len) as usize),
            3 => {
                let i = (rng.next_u64() % len) as usize;
                let extra = (rng.next_u64() % 16) as usize;
                let insert: Vec<u8> = (0..extra).map(|_| rng.next_u64() as u8).collect();
                let at = i.min(bytes.len());
                bytes.splice(at..at, insert);
            }
            4 | 5 => {
                // Replace a stretch of the header by a token.
                let token = pick(rng, TOKENS).as_bytes();
                let at = (10 + rng.next_u64() % 60) as usize;
                if at < bytes.len() {
                    let end = (at + (rng.next_u64() % 8) as usize).min(bytes.len());
                    bytes.splice(at..end, token.iter().copied());
                }
            }
            6 if bytes.len() >= 12 => {
                // A header length claiming anything up to 4 GiB.
                let v = rng.next_u64() as u32;
                bytes[8..12].copy_from_slice(&v.to_le_bytes());
            }
            _ => {
                let extra = (rng.next_u64() % 9) as usize;
                bytes.extend((0..extra).map(|_| rng.next_u64() as u8));
            }
        }
    }
}

#[test]
fn npy_reader_survives_generated_inputs() {
    let cases = env_or("SUBPRUNE_FUZZ_CASES", 10_000);
    let seed = env_or("SUBPRUNE_FUZZ_SEED", 7);
    let mut rng = Rng::new(seed);
    let dir = std::env::temp_dir().join(format!("subprune-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("case.npy");
    let start = std::time::Instant::now();
    let (mut parsed, mut refused) = (0u64, 0u64);
    for case in 0..cases {
        let mut bytes = valid(&mut rng);
        if !rng.next_u64().is_multiple_of(8) {
            mutate(&mut rng, &mut bytes);
        }
        // In memory: parse_f32.
        LARGEST.store(0, Ordering::Relaxed);
        TRACK.store(true, Ordering::Relaxed);
        let result =
            std::panic::catch_unwind(|| subprune::npy::parse_f32(Path::new("case.npy"), &bytes));
        TRACK.store(false, Ordering::Relaxed);
        let largest = LARGEST.load(Ordering::Relaxed);
        let result =
            result.unwrap_or_else(|_| panic!("case {case} (seed {seed}) panics: {bytes:?}"));
        // The decoded floats (at most the file's size) and small header bookkeeping.
        assert!(
            largest <= bytes.len() + 4096,
            "case {case} (seed {seed}): an allocation of {largest} bytes for a {}-byte input",
            bytes.len()
        );
        match &result {
            Ok(t) => {
                parsed += 1;
                assert_eq!(t.data.len(), t.shape.iter().product::<usize>());
            }
            Err(subprune::Error::Npy { .. }) => refused += 1,
            Err(e) => panic!("case {case}: unexpected error kind {e}"),
        }
        // The other parsers (any dtype, labels) on the same bytes: no panic, only Npy errors.
        let others = std::panic::catch_unwind(|| {
            let path = Path::new("case.npy");
            let any = subprune::npy::parse_any(path, &bytes).map(|_| ());
            let labels = subprune::npy::parse_labels(path, &bytes).map(|_| ());
            [any, labels]
        })
        .unwrap_or_else(|_| panic!("case {case} (seed {seed}): parse_any/parse_labels panic"));
        for r in others {
            if let Err(e) = r {
                assert!(matches!(e, subprune::Error::Npy { .. }), "case {case}: {e}");
            }
        }
        // From a file, every 16th case: read_f32 must agree with parse_f32.
        if case.is_multiple_of(16) {
            std::fs::write(&file, &bytes).unwrap();
            LARGEST.store(0, Ordering::Relaxed);
            TRACK.store(true, Ordering::Relaxed);
            let from_file = std::panic::catch_unwind(|| subprune::npy::read_f32(&file));
            TRACK.store(false, Ordering::Relaxed);
            let from_file = from_file.unwrap_or_else(|_| panic!("case {case}: read_f32 panics"));
            assert!(LARGEST.load(Ordering::Relaxed) <= bytes.len() + 16384);
            match (&result, &from_file) {
                // Bit patterns: random payloads hold NaNs.
                (Ok(a), Ok(b)) => assert!(
                    a.shape == b.shape
                        && a.data
                            .iter()
                            .map(|v| v.to_bits())
                            .eq(b.data.iter().map(|v| v.to_bits())),
                    "case {case}: parse_f32 and read_f32 read different tensors"
                ),
                (Err(_), Err(_)) => {}
                _ => panic!(
                    "case {case}: parse_f32 and read_f32 disagree: {result:?} vs {from_file:?}"
                ),
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!(
        "fuzz_npy: {cases} inputs (seed {seed}) in {:.2} s: {parsed} parsed, {refused} refused, 0 panics",
        start.elapsed().as_secs_f64()
    );
}
