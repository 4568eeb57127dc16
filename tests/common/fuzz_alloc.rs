//! The fuzzing harnesses' allocator (`npy_fuzz.rs`, `fuzz_onnx.rs`, included with `#[path]`, never
//! from `common/mod.rs`: it installs a global allocator): it forwards to the system allocator and,
//! while [`TRACK`] is set, records the largest single request in [`LARGEST`] (so that a harness can
//! check that no input makes a reader allocate more than the input justifies); and the run's size
//! and seed from the environment.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

struct Largest;

pub static TRACK: AtomicBool = AtomicBool::new(false);
pub static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator; only records the largest request while tracking.
unsafe impl GlobalAlloc for Largest {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if TRACK.load(Ordering::Relaxed) {
            LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Largest = Largest;

/// The number in the environment variable `name`, else `default` (`SUBPRUNE_FUZZ_CASES`,
/// `SUBPRUNE_FUZZ_SEED`).
pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
