// Greedy downdate (docs/ALGORITHM.md §2): after the host picks channel J (column group J, ks columns)
// and uploads L⁻¹ of E[J,J] = L Lᵀ (ks × ks, rows of dropped columns zero), four products update
// the state, all through this one tiled kernel `out (−)= A·B` with strided operands:
//
//     V  = E[:,J] · L⁻ᵀ          (D × ks)   rows of selected channels written as 0
//     Y  = L⁻¹ · R[J,:]          (ks × m)
//     E ← E − V · Vᵀ             (D × D)    only rows and columns of unselected channels
//     R ← R − V · Y              (D × m)    only rows of unselected channels
//
// so that E stays the Schur complement and R the residual correlation (`CpuGreedy::select`).
// Each workgroup owns a TILE × TILE output tile; the depth (ks, any size) is staged KSTEP at a
// time in workgroup memory, and each thread keeps a 4 × 4 register block (rows ty + 16u and
// columns 4tx .. 4tx + 3: one vec4 workgroup-memory read per depth step, coalesced output rows).

// Output tile edge.
const TILE: u32 = 64u;
// Depth staged per step.
const KSTEP: u32 = 16u;
// Threads per workgroup: 16 × 16.
const THREADS: u32 = 256u;
// vec4s per staged depth row (TILE / 4).
const QUADS: u32 = 16u;

struct UpdateParams {
    // Output rows (M), columns (N) and depth (K) of the product.
    rows: u32,
    cols: u32,
    depth: u32,
    // A[r][k] = a[a_off + r·a_row + k·a_depth].
    a_off: u32,
    a_row: u32,
    a_depth: u32,
    // B[k][c] = b[b_off + k·b_depth + c·b_col].
    b_off: u32,
    b_depth: u32,
    b_col: u32,
    // out[r][c] = out[out_off + r·out_row + c].
    out_off: u32,
    out_row: u32,
    // 1: out −= A·B; 0: out = A·B.
    accumulate: u32,
    // Columns per channel, and the channels of output row 0 and output column 0 (for masking:
    // output row r belongs to channel row_chan0 + r / ks).
    ks: u32,
    row_chan0: u32,
    col_chan0: u32,
    // Bit 0: skip rows of selected channels (write 0 when not accumulating); bit 1: skip columns of
    // selected channels.
    mask: u32,
}

@group(0) @binding(0) var<uniform> p: UpdateParams;
// Left operand A (see UpdateParams for its layout).
@group(0) @binding(1) var<storage, read> a: array<f32>;
// Right operand B (may be the same buffer as `a`).
@group(0) @binding(2) var<storage, read> b: array<f32>;
// Output (see UpdateParams).
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
// 1 for selected channels (d values).
@group(0) @binding(4) var<storage, read> selected: array<u32>;

// a_tile[k·TILE + r] = A[r0 + r][k0 + k]; b_tile[k·QUADS + q] = B[k0 + k][c0 + 4q .. c0 + 4q + 3].
var<workgroup> a_tile: array<f32, KSTEP * TILE>;
var<workgroup> b_tile: array<vec4<f32>, KSTEP * QUADS>;

fn row_live(r: u32) -> bool {
    return (p.mask & 1u) == 0u || selected[p.row_chan0 + r / p.ks] == 0u;
}

fn col_live(c: u32) -> bool {
    return (p.mask & 2u) == 0u || selected[p.col_chan0 + c / p.ks] == 0u;
}

// Writes output row r, columns c .. c + 3 (those inside the output).
fn store_quad(r: u32, c: u32, v: vec4<f32>) {
    if r >= p.rows {
        return;
    }
    let live_row = row_live(r);
    if !live_row && p.accumulate != 0u {
        return;
    }
    for (var f = 0u; f < 4u; f++) {
        let col = c + f;
        if col < p.cols {
            let idx = p.out_off + r * p.out_row + col;
            if p.accumulate == 0u {
                out[idx] = select(0.0, v[f], live_row);
            } else if col_live(col) {
                out[idx] -= v[f];
            }
        }
    }
}

@compute @workgroup_size(THREADS)
fn rank_update(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let r0 = wg.y * TILE;
    let c0 = wg.x * TILE;
    // Thread (tx, ty) owns rows ty + 16u (u = 0..3) and columns 4tx .. 4tx + 3.
    let tx = lid % 16u;
    let ty = lid / 16u;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var k0 = 0u; k0 < p.depth; k0 += KSTEP) {
        workgroupBarrier();
        for (var q = 0u; q < 4u; q++) {
            let e = lid + q * THREADS;
            // A: consecutive threads take consecutive k (contiguous for the layouts used).
            let ak = e % KSTEP;
            let ar = e / KSTEP;
            var av = 0.0;
            if r0 + ar < p.rows && k0 + ak < p.depth {
                av = a[p.a_off + (r0 + ar) * p.a_row + (k0 + ak) * p.a_depth];
            }
            a_tile[ak * TILE + ar] = av;
        }
        // B: one quad per thread (depth row lid / QUADS).
        let bq = lid % QUADS;
        let bk = lid / QUADS;
        var bv = vec4<f32>(0.0);
        for (var f = 0u; f < 4u; f++) {
            let c = c0 + 4u * bq + f;
            if c < p.cols && k0 + bk < p.depth {
                bv[f] = b[p.b_off + (k0 + bk) * p.b_depth + c * p.b_col];
            }
        }
        b_tile[bk * QUADS + bq] = bv;
        workgroupBarrier();
        let steps = min(KSTEP, p.depth - k0);
        for (var k = 0u; k < steps; k++) {
            let row = b_tile[k * QUADS + tx];
            acc0 += a_tile[k * TILE + ty] * row;
            acc1 += a_tile[k * TILE + ty + 16u] * row;
            acc2 += a_tile[k * TILE + ty + 32u] * row;
            acc3 += a_tile[k * TILE + ty + 48u] * row;
        }
    }
    let c = c0 + 4u * tx;
    store_quad(r0 + ty, c, acc0);
    store_quad(r0 + ty + 16u, c, acc1);
    store_quad(r0 + ty + 32u, c, acc2);
    store_quad(r0 + ty + 48u, c, acc3);
}
