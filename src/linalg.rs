//! Small dense f64 linear algebra for the host solves: Cholesky with dropped (dependent)
//! columns and triangular solves. Matrices are row-major. [`gemm`](mod@gemm): the one safe GEMM wrapper (f32
//! and f64) every matrix product goes through.

pub mod gemm;

use self::gemm::{gemm, MatMut, MatRef, Par};

/// Columns per block of the blocked factorization and solves: up to this size they run
/// unblocked, larger ones put most of their work into [`gemm`] products.
const NB: usize = 64;

/// In-place lower Cholesky factorization of the symmetric `n × n` matrix `a` (row-major; only the
/// lower triangle is read). A column whose pivot is not above `tol · ref_diag[j]` is numerically
/// dependent on the previous ones: it is dropped (`kept[j] = false`, its row and column of `L`
/// zeroed), which makes the solves below act as the pseudo-inverse on the remaining columns.
/// Returns the number of kept columns. The strict upper triangle is set to zero. On the calling
/// thread; [`cholesky_dropping_par`] for large matrices.
pub fn cholesky_dropping(
    a: &mut [f64],
    n: usize,
    ref_diag: &[f64],
    tol: f64,
    kept: &mut [bool],
) -> usize {
    cholesky_dropping_par(a, n, ref_diag, tol, kept, Par::Seq)
}

/// [`cholesky_dropping`], blocked (right-looking: each panel of `NB` columns is factored, then
/// the trailing lower triangle is updated by a product on up to `par` threads). The same
/// factorization up to rounding.
pub fn cholesky_dropping_par(
    a: &mut [f64],
    n: usize,
    ref_diag: &[f64],
    tol: f64,
    kept: &mut [bool],
    par: Par,
) -> usize {
    debug_assert!(a.len() >= n * n && ref_diag.len() >= n && kept.len() >= n);
    let mut count = 0;
    let mut panel = Vec::new();
    for j0 in (0..n).step_by(NB) {
        let j1 = (j0 + NB).min(n);
        // Columns j0..j1, rows j..n: earlier panels' updates are already in; the panel's own
        // columns are applied here.
        for j in j0..j1 {
            let mut pivot = a[j * n + j];
            for k in j0..j {
                pivot -= a[j * n + k] * a[j * n + k];
            }
            let ok = pivot > tol * ref_diag[j] && pivot > 0.0 && pivot.is_finite();
            kept[j] = ok;
            if !ok {
                for i in j..n {
                    a[i * n + j] = 0.0;
                }
                for k in 0..j {
                    a[j * n + k] = 0.0;
                }
            } else {
                count += 1;
                let diag = pivot.sqrt();
                a[j * n + j] = diag;
                for i in j + 1..n {
                    let mut s = a[i * n + j];
                    for k in j0..j {
                        s -= a[i * n + k] * a[j * n + k];
                    }
                    a[i * n + j] = s / diag;
                }
            }
        }
        if j1 < n {
            // A[j1.., j1..] −= L[j1.., j0..j1] · L[j1.., j0..j1]ᵀ, lower triangle, by row blocks.
            let (rows, width) = (n - j1, j1 - j0);
            panel.clear();
            for i in j1..n {
                panel.extend_from_slice(&a[i * n + j0..i * n + j1]);
            }
            let l21 = MatRef::row_major(&panel, rows, width).expect("panel of the factor");
            for r0 in (0..rows).step_by(4 * NB) {
                let r1 = (r0 + 4 * NB).min(rows);
                let dst = MatMut::new(&mut a[(j1 + r0) * n + j1..], r1 - r0, r1, n)
                    .expect("trailing block inside the matrix");
                let lhs = l21
                    .submatrix(r0, 0, r1 - r0, width)
                    .expect("rows of the panel");
                let rhs = l21.submatrix(0, 0, r1, width).expect("rows of the panel");
                gemm(dst, true, lhs, rhs.t(), -1.0, par).expect("shapes agree");
            }
        }
    }
    for j in 0..n {
        for k in j + 1..n {
            a[j * n + k] = 0.0;
        }
    }
    count
}

/// Factors a picked channel's `ks × ks` Schur block (consumed as `block`) with
/// [`cholesky_dropping`] against the channel's original Gram diagonal `ref_diag`. Returns `L` and
/// the kept flags; no kept column means the block is fully dependent on the selection.
pub fn factor_block(mut block: Vec<f64>, ref_diag: &[f64], tol: f64) -> (Vec<f64>, Vec<bool>) {
    let ks = ref_diag.len();
    let mut kept = vec![false; ks];
    cholesky_dropping(&mut block, ks, ref_diag, tol, &mut kept);
    (block, kept)
}

/// Solves `L y = b` in place for `cols` right-hand sides (`b` is `n × cols`, row-major), with `L`
/// from [`cholesky_dropping`]; rows of dropped columns are set to zero. On the calling thread;
/// [`forward_solve_par`] for large systems.
pub fn forward_solve(l: &[f64], n: usize, kept: &[bool], b: &mut [f64], cols: usize) {
    forward_solve_par(l, n, kept, b, cols, Par::Seq)
}

/// [`forward_solve`], blocked: the rows of each block of `NB` first take the product with all
/// solved rows before them (on up to `par` threads), then are solved within the block.
pub fn forward_solve_par(l: &[f64], n: usize, kept: &[bool], b: &mut [f64], cols: usize, par: Par) {
    for i0 in (0..n).step_by(NB) {
        let i1 = (i0 + NB).min(n);
        let (done, rest) = b.split_at_mut(i0 * cols);
        if i0 > 0 && cols > 0 {
            let dst = MatMut::row_major(&mut rest[..(i1 - i0) * cols], i1 - i0, cols)
                .expect("block rows of b");
            let lhs = MatRef::new(&l[i0 * n..], i1 - i0, i0, n, 1).expect("rows of L");
            let rhs = MatRef::row_major(done, i0, cols).expect("solved rows of b");
            gemm(dst, true, lhs, rhs, -1.0, par).expect("shapes agree");
        }
        for i in i0..i1 {
            if !kept[i] {
                rest[(i - i0) * cols..(i - i0 + 1) * cols].fill(0.0);
                continue;
            }
            let (block_done, block_rest) = rest.split_at_mut((i - i0) * cols);
            let row = &mut block_rest[..cols];
            for k in i0..i {
                let lik = l[i * n + k];
                if lik != 0.0 {
                    for (r, d) in row
                        .iter_mut()
                        .zip(&block_done[(k - i0) * cols..(k - i0 + 1) * cols])
                    {
                        *r -= lik * d;
                    }
                }
            }
            let inv = 1.0 / l[i * n + i];
            for r in row.iter_mut() {
                *r *= inv;
            }
        }
    }
}

/// Solves `Lᵀ x = y` in place (`y` is `n × cols`, row-major); rows of dropped columns stay zero.
/// On the calling thread; [`backward_solve_par`] for large systems.
pub fn backward_solve(l: &[f64], n: usize, kept: &[bool], y: &mut [f64], cols: usize) {
    backward_solve_par(l, n, kept, y, cols, Par::Seq)
}

/// [`backward_solve`], blocked like [`forward_solve_par`], from the last block of rows back.
pub fn backward_solve_par(
    l: &[f64],
    n: usize,
    kept: &[bool],
    y: &mut [f64],
    cols: usize,
    par: Par,
) {
    let starts: Vec<usize> = (0..n).step_by(NB).collect();
    for &i0 in starts.iter().rev() {
        let i1 = (i0 + NB).min(n);
        let (head, tail) = y.split_at_mut(i1 * cols);
        let block = &mut head[i0 * cols..];
        if i1 < n && cols > 0 {
            // y[i0..i1] −= L[i1.., i0..i1]ᵀ · x[i1..]
            let dst = MatMut::row_major(block, i1 - i0, cols).expect("block rows of y");
            let lhs = MatRef::new(&l[i1 * n + i0..], n - i1, i1 - i0, n, 1)
                .expect("rows of L")
                .t();
            let rhs = MatRef::row_major(tail, n - i1, cols).expect("solved rows of y");
            gemm(dst, true, lhs, rhs, -1.0, par).expect("shapes agree");
        }
        for i in (i0..i1).rev() {
            if !kept[i] {
                block[(i - i0) * cols..(i - i0 + 1) * cols].fill(0.0);
                continue;
            }
            let (row_part, after) = block.split_at_mut((i - i0 + 1) * cols);
            let row = &mut row_part[(i - i0) * cols..];
            for k in i + 1..i1 {
                let lki = l[k * n + i];
                if lki != 0.0 {
                    for (r, d) in row
                        .iter_mut()
                        .zip(&after[(k - i - 1) * cols..(k - i) * cols])
                    {
                        *r -= lki * d;
                    }
                }
            }
            let inv = 1.0 / l[i * n + i];
            for r in row.iter_mut() {
                *r *= inv;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn solves_spd_system_against_direct_product() {
        // Awkward size; A = MᵀM + I is SPD.
        let n = 7;
        let mut rng = Rng::new(3);
        let m: Vec<f64> = (0..n * n).map(|_| rng.normal()).collect();
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                a[i * n + j] = (0..n).map(|k| m[k * n + i] * m[k * n + j]).sum::<f64>()
                    + if i == j { 1.0 } else { 0.0 };
            }
        }
        let b: Vec<f64> = (0..n * 3).map(|_| rng.normal()).collect();
        let mut l = a.clone();
        let mut kept = vec![false; n];
        let diag: Vec<f64> = (0..n).map(|i| a[i * n + i]).collect();
        assert_eq!(cholesky_dropping(&mut l, n, &diag, 1e-12, &mut kept), n);
        let mut x = b.clone();
        forward_solve(&l, n, &kept, &mut x, 3);
        backward_solve(&l, n, &kept, &mut x, 3);
        for i in 0..n {
            for c in 0..3 {
                let ax: f64 = (0..n).map(|k| a[i * n + k] * x[k * 3 + c]).sum();
                assert!((ax - b[i * 3 + c]).abs() < 1e-9, "{ax} vs {}", b[i * 3 + c]);
            }
        }
    }

    /// The unblocked algorithm, column by column, as the reference for the blocked one.
    fn unblocked_cholesky(a: &mut [f64], n: usize, ref_diag: &[f64], tol: f64) -> Vec<bool> {
        let mut kept = vec![false; n];
        for j in 0..n {
            let mut pivot = a[j * n + j];
            for k in 0..j {
                pivot -= a[j * n + k] * a[j * n + k];
            }
            kept[j] = pivot > tol * ref_diag[j] && pivot > 0.0;
            if !kept[j] {
                for i in j..n {
                    a[i * n + j] = 0.0;
                }
                for k in 0..j {
                    a[j * n + k] = 0.0;
                }
                continue;
            }
            let diag = pivot.sqrt();
            a[j * n + j] = diag;
            for i in j + 1..n {
                let mut s = a[i * n + j];
                for k in 0..j {
                    s -= a[i * n + k] * a[j * n + k];
                }
                a[i * n + j] = s / diag;
            }
        }
        for j in 0..n {
            for k in j + 1..n {
                a[j * n + k] = 0.0;
            }
        }
        kept
    }

    #[test]
    fn blocked_factorization_and_solves_match_the_unblocked_ones() {
        // n spans several blocks and ends in a partial one; columns 5, 70, 130 and 199 are
        // dependent on earlier ones (within a block, across blocks, in the last block), so the
        // dropping has to agree too.
        let n = 203;
        let rows = 260;
        let mut rng = Rng::new(11);
        let mut x: Vec<Vec<f64>> = (0..n)
            .map(|_| (0..rows).map(|_| rng.normal()).collect())
            .collect();
        for (dep, from) in [
            (5, [1, 2]),
            (70, [3, 64]),
            (130, [70, 100]),
            (199, [150, 198]),
        ] {
            x[dep] = (0..rows)
                .map(|r| 2.0 * x[from[0]][r] - 0.5 * x[from[1]][r])
                .collect();
        }
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                a[i * n + j] = (0..rows).map(|r| x[i][r] * x[j][r]).sum();
            }
        }
        let diag: Vec<f64> = (0..n).map(|i| a[i * n + i]).collect();
        let tol = 1e-9;
        let mut reference = a.clone();
        let want = unblocked_cholesky(&mut reference, n, &diag, tol);
        assert_eq!(want.iter().filter(|&&k| !k).count(), 4);
        for par in [Par::Seq, Par::Rayon(2)] {
            let mut l = a.clone();
            let mut kept = vec![false; n];
            let count = cholesky_dropping_par(&mut l, n, &diag, tol, &mut kept, par);
            assert_eq!(kept, want);
            assert_eq!(count, n - 4);
            let scale = reference.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            for (i, (got, exp)) in l.iter().zip(&reference).enumerate() {
                assert!(
                    (got - exp).abs() <= 1e-10 * scale,
                    "L[{}, {}]: {got} vs {exp}",
                    i / n,
                    i % n
                );
            }
            // Solves with 3 right-hand sides against the column-by-column ones.
            let cols = 3;
            let b: Vec<f64> = (0..n * cols).map(|_| rng.normal()).collect();
            let mut blocked = b.clone();
            forward_solve_par(&l, n, &kept, &mut blocked, cols, par);
            let mut plain = b.clone();
            for i in 0..n {
                for c in 0..cols {
                    plain[i * cols + c] = if kept[i] {
                        let s: f64 = (0..i).map(|k| l[i * n + k] * plain[k * cols + c]).sum();
                        (b[i * cols + c] - s) / l[i * n + i]
                    } else {
                        0.0
                    };
                }
            }
            let close = |p: &[f64], q: &[f64], what: &str| {
                let scale = q.iter().fold(1.0f64, |m, v| m.max(v.abs()));
                for (i, (u, v)) in p.iter().zip(q).enumerate() {
                    assert!((u - v).abs() <= 1e-9 * scale, "{what}[{i}]: {u} vs {v}");
                }
            };
            close(&blocked, &plain, "forward");
            let mut back = blocked.clone();
            backward_solve_par(&l, n, &kept, &mut back, cols, par);
            let mut plain_back = plain.clone();
            for i in (0..n).rev() {
                for c in 0..cols {
                    plain_back[i * cols + c] = if kept[i] {
                        let s: f64 = (i + 1..n)
                            .map(|k| l[k * n + i] * plain_back[k * cols + c])
                            .sum();
                        (plain[i * cols + c] - s) / l[i * n + i]
                    } else {
                        0.0
                    };
                }
            }
            close(&back, &plain_back, "backward");
        }
    }

    #[test]
    fn drops_dependent_columns() {
        // Columns u, 2u, v: the second is dependent on the first.
        let u = [1.0, 2.0, 0.5];
        let v = [0.0, 1.0, -1.0];
        let cols = [u, [2.0, 4.0, 1.0], v];
        let mut a = vec![0.0; 9];
        for i in 0..3 {
            for j in 0..3 {
                a[i * 3 + j] = (0..3).map(|k| cols[i][k] * cols[j][k]).sum();
            }
        }
        let diag: Vec<f64> = (0..3).map(|i| a[i * 3 + i]).collect();
        let mut kept = vec![true; 3];
        assert_eq!(cholesky_dropping(&mut a, 3, &diag, 1e-10, &mut kept), 2);
        assert_eq!(kept, vec![true, false, true]);
    }
}
