"""OpenBLAS sgemm throughput (through NumPy) on the statistics' shapes: BᵀB with B of N·L × D.

The CPU reference of BENCHMARKS.md: `python3 benches/openblas_sgemm.py` on the machine that ran
`subprune bench`. Prints seconds (best of 3) and GFLOP/s counted as 2·N·L·D², for a plain sgemm (two buffers)
and for NumPy's ssyrk path (the same buffer twice), which does half the work.
"""
import time

import numpy as np

try:
    from threadpoolctl import threadpool_info

    for pool in threadpool_info():
        print(f"# {pool.get('internal_api')} {pool.get('version')} {pool.get('architecture')} threads={pool.get('num_threads')}")
except ImportError:
    pass

CASES = [("resnet56", 32768, 64 * 9), ("vgg11", 8192, 512 * 9), ("resnet50", 25088, 512 * 9)]
rng = np.random.default_rng(7)
for name, rows, cols in CASES:
    b = rng.standard_normal((rows, cols), dtype=np.float32)
    c = b.copy()  # a distinct buffer: NumPy would route b.T @ b to ssyrk
    for label, rhs in (("sgemm", c), ("ssyrk", b)):
        rhs_ = rhs
        b.T @ rhs_  # warm-up
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            b.T @ rhs_
            best = min(best, time.perf_counter() - t0)
        flops = 2 * rows * cols * cols
        print(f"{name:<9} B {rows}x{cols}: {label} BᵀB {best:.4f} s, {flops / best / 1e9:.1f} GFLOP/s (as 2·N·L·D²)")
