// Greedy scoring (docs/ALGORITHM.md §2): the marginal gain of every channel in one dispatch, the
// argmax, and the chosen channel's diagonal block of the Schur complement for the host.
//
// The greedy state is split into row blocks of whole channels (one block unless E is larger than
// a storage binding); one bind group per block. Within a block, channel i (column group I, ks
// columns) owns local rows (i − chan0)·ks .. + ks of `schur` and `resid`.
//
// gains:      one workgroup per channel of the block. Factors E[I,I] = L Lᵀ by Cholesky with the
//             dropping rule of `linalg::cholesky_dropping` (a pivot not above tol · G[j,j] drops
//             column j), forward-solves L Y = R[I,:] and writes gain = ‖Y‖²_F. Selected channels
//             get 0. Blocks up to KS_SHARED columns are factored in workgroup memory, larger ones
//             in the `factor` scratch buffer.
// pick:       one workgroup: the host's argmax rule (largest gain > 0 among unselected channels,
//             lowest index on ties; else the first unselected channel), written to report[d].
// copy_block: one workgroup per row block: the block holding the picked channel J copies E[J,J]
//             into the report, so that one readback per greedy step carries gains, pick and block.

// Threads per workgroup of `gains`.
const THREADS: u32 = 128u;
// Threads of `pick` and `copy_block`.
const PICK_THREADS: u32 = 256u;
// Largest column group factored in workgroup memory (KS_SHARED² + KS_SHARED f32 ≤ 12.8 KiB).
const KS_SHARED: u32 = 56u;
// Largest column group whose forward-solve values stay in a private array per thread.
const KS_PRIVATE: u32 = 64u;
// No channel.
const NONE: u32 = 0xffffffffu;
// Pivots at or above this are treated as non-finite.
const F32_HUGE: f32 = 3.0e38;

struct GainsParams {
    // First channel of this row block and the number of channels in it.
    chan0: u32,
    channels: u32,
    // Columns per channel ks, columns D (the row length of `schur`), consumer outputs m.
    ks: u32,
    d_cols: u32,
    m: u32,
    // Channels of the layer d (the report's gain count).
    total_channels: u32,
    // Relative dependence tolerance (pivot ≤ tol · G[j,j] drops column j).
    tol: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: GainsParams;
// This block's rows of the Schur complement E: (channels·ks) × D, row-major. Both triangles are
// kept; entries are valid where row and column belong to unselected channels.
@group(0) @binding(1) var<storage, read> schur: array<f32>;
// This block's rows of the residual correlation R: (channels·ks) × m, row-major.
@group(0) @binding(2) var<storage, read> resid: array<f32>;
// Scratch, same layout as `resid`: Y = L⁻¹ R[I,:] of each channel when ks > KS_PRIVATE.
@group(0) @binding(3) var<storage, read_write> solved: array<f32>;
// Scratch for ks > KS_SHARED: per channel of the block, L (ks × ks row-major) then its diagonal
// (ks), at (channel − chan0)·(ks² + ks). Unused (any small buffer) otherwise.
@group(0) @binding(4) var<storage, read_write> factor: array<f32>;
// Diagonal of the original Gram matrix G (D values): the dependence tolerance's reference.
@group(0) @binding(5) var<storage, read> gram_diag: array<f32>;
// 1 for selected channels (d values).
@group(0) @binding(6) var<storage, read> selected: array<u32>;
// The per-step report read back by the host, as u32 words: [0, d): gains (f32 bits); [d]: the
// picked channel; [d + 1, d + 1 + ks²): E[J,J] row-major (f32 bits).
@group(0) @binding(7) var<storage, read_write> report: array<u32>;

var<workgroup> factor_shared: array<f32, KS_SHARED * KS_SHARED>;
var<workgroup> diag_shared: array<f32, KS_SHARED>;
var<workgroup> partial: array<f32, THREADS>;
var<private> in_shared: bool;
var<private> factor_base: u32;

fn l_get(i: u32, j: u32) -> f32 {
    let idx = i * p.ks + j;
    if in_shared {
        return factor_shared[idx];
    }
    return factor[factor_base + idx];
}

fn l_set(i: u32, j: u32, v: f32) {
    let idx = i * p.ks + j;
    if in_shared {
        factor_shared[idx] = v;
    } else {
        factor[factor_base + idx] = v;
    }
}

fn diag_get(j: u32) -> f32 {
    if in_shared {
        return diag_shared[j];
    }
    return factor[factor_base + p.ks * p.ks + j];
}

fn diag_set(j: u32, v: f32) {
    if in_shared {
        diag_shared[j] = v;
    } else {
        factor[factor_base + p.ks * p.ks + j] = v;
    }
}

// Orders both workgroup and storage memory (the factor may live in either).
fn sync() {
    storageBarrier();
    workgroupBarrier();
}

@compute @workgroup_size(THREADS)
fn gains(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let local = wg.x + wg.y * groups.x;
    if local >= p.channels {
        return;
    }
    let ch = p.chan0 + local;
    if selected[ch] != 0u {
        if lid == 0u {
            report[ch] = 0u;
        }
        return;
    }
    let ks = p.ks;
    in_shared = ks <= KS_SHARED;
    factor_base = local * (ks * ks + ks);
    let row0 = local * ks;
    let col0 = ch * ks;

    for (var t = lid; t < ks * ks; t += THREADS) {
        let i = t / ks;
        let j = t % ks;
        l_set(i, j, schur[(row0 + i) * p.d_cols + col0 + j]);
    }

    // Right-looking Cholesky, lower triangle. Column j's pivot is the trailing-updated diagonal;
    // a dropped column is zeroed so that the trailing update and the solve ignore it.
    for (var j = 0u; j < ks; j++) {
        sync();
        let pivot = l_get(j, j);
        let keep = pivot > p.tol * gram_diag[col0 + j] && pivot > 0.0 && pivot < F32_HUGE;
        let root = select(1.0, sqrt(pivot), keep);
        for (var i = j + 1u + lid; i < ks; i += THREADS) {
            l_set(i, j, select(0.0, l_get(i, j) / root, keep));
        }
        if lid == 0u {
            diag_set(j, select(0.0, root, keep));
        }
        sync();
        let n = ks - j - 1u;
        for (var t = lid; t < n * n; t += THREADS) {
            let i = j + 1u + t / n;
            let k = j + 1u + t % n;
            if k <= i {
                l_set(i, k, l_get(i, k) - l_get(i, j) * l_get(k, j));
            }
        }
    }
    sync();

    // Forward solve, one consumer output column per thread: y_i = (R[i] − Σ_{k<i} L[i,k] y_k) / L[i,i].
    // The y of one column stay in a private array up to KS_PRIVATE rows, else in `solved`.
    var sum = 0.0;
    if ks <= KS_PRIVATE {
        var y: array<f32, KS_PRIVATE>;
        for (var c = lid; c < p.m; c += THREADS) {
            for (var i = 0u; i < ks; i++) {
                var s = resid[(row0 + i) * p.m + c];
                for (var k = 0u; k < i; k++) {
                    s -= l_get(i, k) * y[k];
                }
                let di = diag_get(i);
                let yi = select(0.0, s / select(1.0, di, di > 0.0), di > 0.0);
                y[i] = yi;
                sum += yi * yi;
            }
        }
    } else {
        for (var c = lid; c < p.m; c += THREADS) {
            for (var i = 0u; i < ks; i++) {
                var s = resid[(row0 + i) * p.m + c];
                for (var k = 0u; k < i; k++) {
                    s -= l_get(i, k) * solved[(row0 + k) * p.m + c];
                }
                let di = diag_get(i);
                let yi = select(0.0, s / select(1.0, di, di > 0.0), di > 0.0);
                solved[(row0 + i) * p.m + c] = yi;
                sum += yi * yi;
            }
        }
    }
    partial[lid] = sum;
    workgroupBarrier();
    for (var half = THREADS / 2u; half > 0u; half >>= 1u) {
        if lid < half {
            partial[lid] += partial[lid + half];
        }
        workgroupBarrier();
    }
    if lid == 0u {
        report[ch] = bitcast<u32>(partial[0]);
    }
}

var<workgroup> best_gain: array<f32, PICK_THREADS>;
var<workgroup> best_index: array<u32, PICK_THREADS>;
var<workgroup> first_free: array<u32, PICK_THREADS>;

@compute @workgroup_size(PICK_THREADS)
fn pick(@builtin(local_invocation_index) lid: u32) {
    let d = p.total_channels;
    var g = 0.0;
    var bi = NONE;
    var ff = NONE;
    // Ascending per thread: a strict `>` keeps the lowest index of equal gains.
    for (var ch = lid; ch < d; ch += PICK_THREADS) {
        if selected[ch] == 0u {
            ff = min(ff, ch);
            let v = bitcast<f32>(report[ch]);
            if v > g {
                g = v;
                bi = ch;
            }
        }
    }
    best_gain[lid] = g;
    best_index[lid] = bi;
    first_free[lid] = ff;
    workgroupBarrier();
    for (var half = PICK_THREADS / 2u; half > 0u; half >>= 1u) {
        if lid < half {
            let og = best_gain[lid + half];
            let oi = best_index[lid + half];
            if og > best_gain[lid] || (og == best_gain[lid] && oi < best_index[lid]) {
                best_gain[lid] = og;
                best_index[lid] = oi;
            }
            first_free[lid] = min(first_free[lid], first_free[lid + half]);
        }
        workgroupBarrier();
    }
    if lid == 0u {
        let j = select(first_free[0], best_index[0], best_index[0] != NONE);
        report[d] = j;
    }
}

@compute @workgroup_size(PICK_THREADS)
fn copy_block(@builtin(local_invocation_index) lid: u32) {
    let d = p.total_channels;
    let j = report[d];
    if j < p.chan0 || j >= p.chan0 + p.channels {
        return;
    }
    let ks = p.ks;
    let row0 = (j - p.chan0) * ks;
    let col0 = j * ks;
    for (var t = lid; t < ks * ks; t += PICK_THREADS) {
        report[d + 1u + t] = bitcast<u32>(schur[(row0 + t / ks) * p.d_cols + col0 + t % ks]);
    }
}
