//! Criterion benchmarks: the statistics (as GFLOP/s, next to a tuned sgemm of the same shape) and
//! the full greedy, on the paper's layer sizes, for every available backend.
//!
//! `cargo bench --bench layer` runs all; `cargo bench --bench layer -- resnet56` one case.
//! Figures and machines are recorded in BENCHMARKS.md.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use subprune::bench::{LayerCase, CASES};
use subprune::{Backend, CpuBackend, GpuBackend};

fn backends() -> Vec<Box<dyn Backend>> {
    let mut list: Vec<Box<dyn Backend>> = vec![Box::new(CpuBackend::new())];
    list.extend(extra_backends());
    list
}

/// The GPU backend when wgpu finds a hardware adapter. A software adapter (lavapipe) is only
/// benchmarked with `SUBPRUNE_BENCH_GPU=1`: at a few GFLOP/s the paper-sized layers take minutes
/// per sample there (use `subprune bench --backend gpu --case resnet56` for lavapipe figures).
fn extra_backends() -> Vec<Box<dyn Backend>> {
    let forced = std::env::var("SUBPRUNE_BENCH_GPU").is_ok_and(|v| v == "1");
    match GpuBackend::new(None) {
        Ok(gpu) if forced || !gpu.is_software() => vec![Box::new(gpu)],
        Ok(gpu) => {
            eprintln!(
                "skipping the software adapter {} (set SUBPRUNE_BENCH_GPU=1 to include it)",
                gpu.adapter_name()
            );
            Vec::new()
        }
        Err(e) => {
            eprintln!("no GPU backend: {e}");
            Vec::new()
        }
    }
}

fn bench_case(c: &mut Criterion, case: LayerCase) {
    let (problem, inputs) = case.instance(1).expect("benchmark instance");
    let mut group = c.benchmark_group(case.name);
    group.sample_size(10);
    group.throughput(Throughput::Elements(case.stats_flops() as u64));
    let mut sgemm = subprune::bench::SgemmReference::new(case.rows(), case.columns());
    group.bench_function("sgemm_reference_cpu", |b| {
        b.iter(|| sgemm.run().expect("a valid shape"))
    });
    for backend in backends() {
        let name = backend.name();
        group.bench_function(format!("stats/{name}"), |b| {
            b.iter(|| subprune::bench::time_stats(backend.as_ref(), &problem, &inputs).unwrap())
        });
    }
    group.throughput(Throughput::Elements(case.channels as u64));
    for backend in backends() {
        let (_, stats) = subprune::bench::time_stats(backend.as_ref(), &problem, &inputs).unwrap();
        let name = backend.name();
        group.bench_function(format!("greedy/{name}"), |b| {
            b.iter(|| subprune::bench::time_greedy(backend.as_ref(), &stats).unwrap())
        });
    }
    group.finish();
}

fn layers(c: &mut Criterion) {
    for case in CASES {
        bench_case(c, case);
    }
}

criterion_group!(benches, layers);
criterion_main!(benches);
