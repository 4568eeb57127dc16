//! Peak memory of reading a `.npy` file (issue 7, item 7): one copy of the data, not two (raw
//! bytes and decoded floats). A counting global allocator records the peak of live heap bytes.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
            PEAK.fetch_max(live, Ordering::SeqCst);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[test]
fn reading_a_npy_holds_one_copy_of_the_data() {
    let dir = std::env::temp_dir().join(format!("subprune-npy-memory-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("big.npy");
    let count = 4 << 20; // 16 MiB of f32
    let values: Vec<f32> = (0..count).map(|i| (i % 1000) as f32 * 0.5).collect();
    let tensor = subprune::Tensor::new(vec![count / 64, 64], values).unwrap();
    subprune::npy::write_f32(&path, &tensor).unwrap();
    drop(tensor);
    let payload = count * 4;
    let base = LIVE.load(Ordering::SeqCst);
    PEAK.store(base, Ordering::SeqCst);
    let read = subprune::npy::read_f32(&path).unwrap();
    let peak = PEAK.load(Ordering::SeqCst) - base;
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(read.data.len(), count);
    assert_eq!(read.data[1001], 0.5);
    // One copy plus small change (header, shape); two copies would be 2 × payload.
    assert!(
        peak < payload + payload / 8,
        "peak {peak} bytes while reading a {payload}-byte payload"
    );
}
