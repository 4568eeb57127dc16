//! Small dense f64 linear algebra for the host solves: Cholesky with dropped (dependent)
//! columns and triangular solves. Matrices are row-major. [`gemm`]: the one safe GEMM wrapper (f32
//! and f64) every matrix product goes through.

pub mod gemm;

/// In-place lower Cholesky factorization of the symmetric `n × n` matrix `a` (row-major; only the
/// lower triangle is read). A column whose pivot is not above `tol · ref_diag[j]` is numerically
/// dependent on the previous ones: it is dropped (`kept[j] = false`, its row and column of `L`
/// zeroed), which makes the solves below act as the pseudo-inverse on the remaining columns.
/// Returns the number of kept columns. The strict upper triangle is set to zero.
pub fn cholesky_dropping(
    a: &mut [f64],
    n: usize,
    ref_diag: &[f64],
    tol: f64,
    kept: &mut [bool],
) -> usize {
    debug_assert!(a.len() >= n * n && ref_diag.len() >= n && kept.len() >= n);
    let mut count = 0;
    for j in 0..n {
        let mut pivot = a[j * n + j];
        for k in 0..j {
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
                for k in 0..j {
                    s -= a[i * n + k] * a[j * n + k];
                }
                a[i * n + j] = s / diag;
            }
        }
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
/// from [`cholesky_dropping`]; rows of dropped columns are set to zero.
pub fn forward_solve(l: &[f64], n: usize, kept: &[bool], b: &mut [f64], cols: usize) {
    for i in 0..n {
        if !kept[i] {
            b[i * cols..(i + 1) * cols].fill(0.0);
            continue;
        }
        let (done, rest) = b.split_at_mut(i * cols);
        let row = &mut rest[..cols];
        for k in 0..i {
            let lik = l[i * n + k];
            if lik != 0.0 {
                for (r, d) in row.iter_mut().zip(&done[k * cols..(k + 1) * cols]) {
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

/// Solves `Lᵀ x = y` in place (`y` is `n × cols`, row-major); rows of dropped columns stay zero.
pub fn backward_solve(l: &[f64], n: usize, kept: &[bool], y: &mut [f64], cols: usize) {
    for i in (0..n).rev() {
        if !kept[i] {
            y[i * cols..(i + 1) * cols].fill(0.0);
            continue;
        }
        let (head, tail) = y.split_at_mut((i + 1) * cols);
        let row = &mut head[i * cols..];
        for k in i + 1..n {
            let lki = l[k * n + i];
            if lki != 0.0 {
                for (r, d) in row
                    .iter_mut()
                    .zip(&tail[(k - i - 1) * cols..(k - i) * cols])
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
