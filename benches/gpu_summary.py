#!/usr/bin/env python3
"""Issue 9's figures from one GPU-machine log (benches/gpu_machine.sh stats): the output of
`subprune --backend gpu bench` and of cublas_ref.py, run in the same call, turned into the
ratios the targets are stated in (all measured side by side in that one run).

Usage: python3 benches/gpu_summary.py LOG   (prints a markdown table; exit 1 when the log holds
no bench row of a GPU backend)

Columns: cuBLAS sgemm BᵀB (FP32, no TF32, median); the CPU backend's statistics (all cores);
the GPU statistics with the inputs uploaded from the host, and with the inputs already on the
device (as `prune --backend gpu` feeds them, and as cuBLAS's timing assumes); the Gram kernel
alone (GPU timestamps); ours / cuBLAS = cuBLAS time / our time (target ≥ 50%); GPU / CPU = CPU
time / GPU time (target ≥ 5×); the GPU's fixed cost 2·t(n/2) − t(n) (target < 10 ms at D = 4608).
"""
import re
import sys

ROW = re.compile(r"^(\S+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+) \| (.+?)\s{2,}([\d.]+)\s")
KERNEL = re.compile(r"kernels ([\d.]+) s")
FIXED = re.compile(r"fixed cost (-?[\d.]+) ms")
RESIDENT = re.compile(r"inputs already on the device: stats ([\d.]+) s")
CUBLAS = re.compile(r"^\| (\S+) \| (\d+) \| (\d+) \| ([\d.]+) ms \|")


def parse(lines):
    cases, cublas, order = {}, {}, []
    case = where = None
    for line in lines:
        m = CUBLAS.match(line)
        if m:
            cublas.setdefault(m.group(1), float(m.group(4)) / 1e3)
            continue
        m = ROW.match(line)
        if m:
            case = m.group(1)
            if case not in cases:
                cases[case] = {"D": int(m.group(2)) * int(m.group(3)), "n": int(m.group(4))}
                order.append(case)
            where = "cpu" if m.group(6).startswith("cpu") else "gpu"
            cases[case].setdefault(where, float(m.group(7)))
            continue
        if case is None:
            continue
        m = RESIDENT.search(line)
        if m:
            where = "resident"
            cases[case].setdefault(where, float(m.group(1)))
            continue
        if line.lstrip().startswith("phases") and where:
            k = KERNEL.search(line)
            if k:
                cases[case].setdefault(where + "_kernel", float(k.group(1)))
            continue
        m = FIXED.search(line)
        if m and where:
            cases[case].setdefault(where + "_fixed", float(m.group(1)))
            continue
        if line.startswith(case) and "reference sgemm" in line:
            where = None
    # A case seen again (a later step's bench) keeps its first figures.
    return cases, cublas, order


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    with open(sys.argv[1], encoding="utf-8", errors="replace") as f:
        cases, cublas, order = parse(f.read().splitlines())
    ms = lambda s: "–" if s is None else f"{s * 1e3:.2f} ms"
    pct = lambda a, b: "–" if a is None or b is None else f"{100 * a / b:.0f}%"
    times = lambda a, b: "–" if a is None or b is None else f"{a / b:.1f}×"
    print("| case | n | D | cuBLAS | CPU stats | GPU stats (uploaded) | GPU stats (on device) "
          "| Gram kernel | ours / cuBLAS: on device, uploaded, kernel (≥ 50%) "
          "| GPU / CPU: on device, uploaded (≥ 5×) | GPU fixed cost: on device, uploaded |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    gpu_rows = 0
    for name in order:
        c = cases[name]
        ref = cublas.get(name)
        gpu, res, cpu = c.get("gpu"), c.get("resident"), c.get("cpu")
        kernel = c.get("resident_kernel", c.get("gpu_kernel"))
        gpu_rows += gpu is not None
        fixed = lambda k: "–" if c.get(k) is None else f"{c[k]:.2f} ms"
        print(f"| {name} | {c['n']} | {c['D']} | {ms(ref)} | {ms(cpu)} | {ms(gpu)} | {ms(res)} "
              f"| {ms(kernel)} | {pct(ref, res)}, {pct(ref, gpu)}, {pct(ref, kernel)} "
              f"| {times(cpu, res)}, {times(cpu, gpu)} "
              f"| {fixed('resident_fixed')}, {fixed('gpu_fixed')} |")
    if not gpu_rows:
        sys.exit("no GPU bench row in the log")


if __name__ == "__main__":
    main()
