// The tiled matmul core. gram.wgsl (the statistics, `acc += Lᵀ R`) and conv.wgsl (the forward
// pass's implicit GEMM, `out = Wᵀ X`) are each this file followed by their own part: the host
// compiles the concatenation (src/gpu/shaders.rs), so that both kernels
// multiply with the same code.
//
// One workgroup computes a TILE_M × TILE_N block of `Aᵀ B` over a range of k (A is k × M, B is
// k × N): TILE_M = 8·WM and TILE_N = 8·WN with WM × WN threads, each owning an 8 × 8 register
// block (see `Block`): two 4 × 4 quads per axis, 4·WM rows and 4·WN columns apart, so that the
// workgroup-memory reads are conflict-free vec4 loads. k is staged BK rows at a time in two
// workgroup-memory stages (k-major, each staged row padded by one vec4 against bank conflicts on
// the stores): while one stage is multiplied, the next one is fetched from global memory into
// registers and then stored into the other stage, so one barrier per stage suffices. The inner
// loop is unrolled in the text (naga emits no unroll hints).
//
// The kernel part says which values of the overrides below it supports, and defines the staging
// hooks that `multiply_range` calls:
//   fn load_stage(k0: u32)       fetches the BK rows k0 .. k0 + BK of its share into registers
//                                (zeros outside the operands);
//   fn store_stage(s: u32)       writes them into stage s with `store_a` / `store_b`;
//   fn stage_done(block: ptr<function, Block>, rows: u32, last: bool)
//                                runs after each stage (`rows` staged so far in this range, `last`
//                                for the final stage): gram.wgsl folds the block into its
//                                compensated accumulator there; conv.wgsl does nothing.

// Threads along M and along N (TILE_M = 8·WM, TILE_N = 8·WN), and k rows per stage
// (pipeline-overridable). Declared before anything sized by them (naga processes overrides in
// declaration order).
override WM: u32 = 16u;
override WN: u32 = 16u;
override BK: u32 = 16u;

// Staged A rows: stage s, row k starts at vec4 (s·BK + k)·(2·WM + 1); its vec4 q holds tile
// columns 4q .. 4q + 3. B alike with WN.
var<workgroup> a_tile: array<vec4<f32>, 2u * BK * (2u * WM + 1u)>;
var<workgroup> b_tile: array<vec4<f32>, 2u * BK * (2u * WN + 1u)>;

// One thread's 8 × 8 block of results: entry 2·r + h holds block row r (tile row 4·ty + r for
// r < 4, 4·WM + 4·ty + r − 4 after) and quad h (tile columns 4·tx .. + 3 for h = 0,
// 4·WN + 4·tx .. + 3 for h = 1). Indexed only by constants, so it stays in registers.
alias Block = array<vec4<f32>, 16>;

// Stores element (k, col) of stage s of the A tile (col < 8·WM).
fn store_a(s: u32, k: u32, col: u32, v: f32) {
    a_tile[(s * BK + k) * (2u * WM + 1u) + col / 4u][col % 4u] = v;
}

// Stores element (k, col) of stage s of the B tile (col < 8·WN).
fn store_b(s: u32, k: u32, col: u32, v: f32) {
    b_tile[(s * BK + k) * (2u * WN + 1u) + col / 4u][col % 4u] = v;
}

// block += the products of stage s for thread (tx, ty).
fn multiply_stage(block: ptr<function, Block>, s: u32, tx: u32, ty: u32) {
    let a_stride = 2u * WM + 1u;
    let b_stride = 2u * WN + 1u;
    let a_base = s * BK * a_stride;
    let b_base = s * BK * b_stride;
    for (var k = 0u; k < BK; k++) {
        let a0 = a_tile[a_base + k * a_stride + ty];
        let a1 = a_tile[a_base + k * a_stride + WM + ty];
        let b0 = b_tile[b_base + k * b_stride + tx];
        let b1 = b_tile[b_base + k * b_stride + WN + tx];
        (*block)[0] += a0.x * b0;
        (*block)[1] += a0.x * b1;
        (*block)[2] += a0.y * b0;
        (*block)[3] += a0.y * b1;
        (*block)[4] += a0.z * b0;
        (*block)[5] += a0.z * b1;
        (*block)[6] += a0.w * b0;
        (*block)[7] += a0.w * b1;
        (*block)[8] += a1.x * b0;
        (*block)[9] += a1.x * b1;
        (*block)[10] += a1.y * b0;
        (*block)[11] += a1.y * b1;
        (*block)[12] += a1.z * b0;
        (*block)[13] += a1.z * b1;
        (*block)[14] += a1.w * b0;
        (*block)[15] += a1.w * b1;
    }
}

// Multiplies k rows first .. end (uniform across the workgroup) into `block`, the stages
// double-buffered (an empty range leaves `block` as it is).
fn multiply_range(block: ptr<function, Block>, first: u32, end: u32, tx: u32, ty: u32) {
    load_stage(first);
    store_stage(0u);
    workgroupBarrier();
    var s = 0u;
    for (var k0 = first; k0 < end; k0 += BK) {
        let next = k0 + BK;
        let more = next < end;
        if more {
            load_stage(next);
        }
        multiply_stage(block, s, tx, ty);
        if more {
            store_stage(1u - s);
        }
        stage_done(block, next - first, !more);
        workgroupBarrier();
        s = 1u - s;
    }
}

// Tile row of block entry 2·r + h (thread row ty), and tile column of its quad (thread column tx).
fn block_row(r: u32, ty: u32) -> u32 {
    return select(4u * WM + 4u * ty + r - 4u, 4u * ty + r, r < 4u);
}

fn block_col(h: u32, tx: u32) -> u32 {
    return select(4u * WN + 4u * tx, 4u * tx, h == 0u);
}
