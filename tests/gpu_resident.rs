//! Statistics the GPU backend leaves on its device: `G` and `C0` stay there after the statistics
//! (every finishing path: projected, symmetric, unprojected with a target), the GPU greedy copies
//! them buffer to buffer, and the host reads back only the rows it uses (`G[S,S]` and `C0[S,:]`
//! for the reweighting). Checked against the CPU backend and against a host copy of the same
//! matrices (bit for bit), on lavapipe when there is no GPU.

mod common;

use common::{activations, assert_close_scaled, gpu, random};
use subprune::rng::Rng;
use subprune::{layer_stats, run_greedy, Backend, ConvOptions, CpuBackend, Error, LayerProblem};

/// Statistics, f32 inputs: relative to the largest entry (as in `backend_kernels.rs`).
const STATS_TOL: f64 = 2e-6;

#[test]
fn g_and_c0_stay_on_the_device_and_are_read_back_only_as_used() {
    // A conv consumer with a target (asymmetric, projected: 4m < 3D), awkward sizes:
    // D = 13 · 9 = 117, m = 11.
    let mut rng = Rng::new(41);
    let inputs = activations(&mut rng, &[9, 13, 7, 6]);
    let target = activations(&mut rng, &[9, 13, 7, 6]);
    let weight = random(&mut rng, &[11, 13, 3, 3]);
    let conv = ConvOptions {
        padding: [1, 1],
        ..ConvOptions::default()
    };
    let problem = LayerProblem::new(&inputs.shape, weight.view(), Some(conv)).unwrap();
    let stats_on = |backend: &dyn Backend| {
        layer_stats(backend, &problem, inputs.view(), Some(target.view()), 4).unwrap()
    };
    let cpu = stats_on(&CpuBackend::new());
    let dev = stats_on(gpu());
    assert!(dev.gram.is_on_device() && dev.gram.host_values().is_none());
    assert!(dev.c0.is_on_device() && dev.c0.host_values().is_none());
    assert_eq!((dev.gram.dim(), dev.gram.len()), (117, 117 * 117));
    assert_eq!((dev.c0.cols(), dev.c0.len()), (11, 117 * 11));
    assert!((dev.total - cpu.total).abs() <= 1e-5 * cpu.total);
    // The diagonal came back with C0, from the same f32 matrix.
    assert_close_scaled("diagonal", &dev.gram.diag(), &cpu.gram.diag(), STATS_TOL);
    // Rows read back on demand: unsorted, with runs and gaps.
    let idx = [5, 6, 7, 40, 2, 100, 101, 116, 0];
    let sub = dev.gram.submatrix(&idx).unwrap();
    assert_close_scaled(
        "G[idx, idx]",
        &sub,
        &cpu.gram.submatrix(&idx).unwrap(),
        STATS_TOL,
    );
    assert!(matches!(
        dev.gram.submatrix(&[3, 117]),
        Err(Error::InvalidArgument(_))
    ));
    // C0's rows likewise, from the device.
    assert_close_scaled(
        "C0[idx, :]",
        &dev.c0.rows_of(&idx).unwrap(),
        &cpu.c0.rows_of(&idx).unwrap(),
        STATS_TOL,
    );
    assert!(matches!(
        dev.c0.rows_of(&[117]),
        Err(Error::InvalidArgument(_))
    ));
    // The greedy copies G and C0 on the device and the reweighting reads G[S,S] and C0[S,:]:
    // still no host copy of either.
    let tol = subprune::DEFAULT_DEPENDENCE_TOL;
    let run = run_greedy(gpu(), &dev, tol, &mut |_, _, _| {}).unwrap();
    let kept: Vec<usize> = run.order[..5].to_vec();
    let rw = subprune::reweight(&dev, &kept, 0.0, tol).unwrap();
    let plain = subprune::layer::reweight::original_rows(&dev, &kept, None)
        .map(|r| r.relative_error)
        .unwrap();
    assert!(dev.gram.host_values().is_none(), "G was read back");
    assert!(dev.c0.host_values().is_none(), "C0 was read back");
    // The CPU's greedy on the same statistics reads them back and picks the same channels.
    let cpu_run = run_greedy(&CpuBackend::new(), &cpu, tol, &mut |_, _, _| {}).unwrap();
    assert_eq!(run.order[..5], cpu_run.order[..5]);
    // Now read it all back: it matches the CPU, and a host copy of it gives the very same
    // greedy run, reweighting and submatrix (the device copy is bit for bit the f32 matrix).
    let all = dev.gram.values().unwrap().to_vec();
    assert_close_scaled("G", &all, cpu.gram.values().unwrap(), STATS_TOL);
    let all_c0 = dev.c0.values().unwrap().to_vec();
    assert_close_scaled("C0", &all_c0, cpu.c0.values().unwrap(), STATS_TOL);
    let mut host = dev.clone();
    host.gram = subprune::layer::Gram::from_host(all);
    host.c0 = subprune::layer::StatsMatrix::from_host(all_c0, 11);
    let host_run = run_greedy(gpu(), &host, tol, &mut |_, _, _| {}).unwrap();
    assert_eq!(run.order, host_run.order);
    let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&run.gains), bits(&host_run.gains));
    let host_rw = subprune::reweight(&host, &kept, 0.0, tol).unwrap();
    assert_eq!(bits(&rw.weight), bits(&host_rw.weight));
    assert_eq!(
        plain.to_bits(),
        subprune::layer::reweight::original_rows(&host, &kept, None)
            .map(|r| r.relative_error)
            .unwrap()
            .to_bits()
    );
    assert_eq!(bits(&sub), bits(&host.gram.submatrix(&idx).unwrap()));
    assert_eq!(
        bits(&dev.c0.rows_of(&idx).unwrap()),
        bits(&host.c0.rows_of(&idx).unwrap())
    );
    // Releasing the device copies keeps the values.
    let mut released = dev.clone();
    released.release_device().unwrap();
    assert!(!released.gram.is_on_device() && !released.c0.is_on_device());
    assert_eq!(
        bits(released.gram.values().unwrap()),
        bits(host.gram.values().unwrap())
    );
    assert_eq!(
        bits(released.c0.values().unwrap()),
        bits(host.c0.values().unwrap())
    );
}

#[test]
fn c0_stays_on_the_device_on_every_finishing_path() {
    // Besides the projected form above: the symmetric form (C0 = G·W, ‖AW‖² = ⟨C0, W⟩) and the
    // unprojected asymmetric one (C0 = (BᵀA)·W, ‖AW‖² = ⟨(AᵀA)·W, W⟩), conv and dense. ‖AW‖²
    // comes from the device's row dot products; C0 stays there, equal to the CPU's, and the
    // greedy and reweighting on it match a host copy of it bit for bit.
    let mut rng = Rng::new(43);
    let x = activations(&mut rng, &[7, 6, 5, 5]);
    let t = activations(&mut rng, &[7, 6, 5, 5]);
    let w = random(&mut rng, &[9, 6, 3, 3]);
    let xd = activations(&mut rng, &[23, 19]);
    let td = activations(&mut rng, &[23, 19]);
    let wd = random(&mut rng, &[4, 19]);
    let conv = ConvOptions {
        padding: [1, 1],
        ..ConvOptions::default()
    };
    let unprojected = gpu().clone().with_projected_statistics(false);
    let tol = subprune::DEFAULT_DEPENDENCE_TOL;
    for (what, inputs, target, weight, conv) in [
        ("conv", &x, None, &w, Some(conv)),
        ("conv+target", &x, Some(&t), &w, Some(conv)),
        ("dense", &xd, None, &wd, None),
        ("dense+target", &xd, Some(&td), &wd, None),
    ] {
        let problem = LayerProblem::new(&inputs.shape, weight.view(), conv).unwrap();
        let target = target.map(|t| t.view());
        let cpu = layer_stats(&CpuBackend::new(), &problem, inputs.view(), target, 4).unwrap();
        let dev = layer_stats(&unprojected, &problem, inputs.view(), target, 4).unwrap();
        assert!(dev.c0.host_values().is_none(), "{what}: C0 came back");
        assert!(
            (dev.total - cpu.total).abs() <= 1e-5 * cpu.total,
            "{what}: ‖AW‖² {} against the CPU's {}",
            dev.total,
            cpu.total
        );
        let run = run_greedy(&unprojected, &dev, tol, &mut |_, _, _| {}).unwrap();
        let kept: Vec<usize> = run.order[..3].to_vec();
        let rw = subprune::reweight(&dev, &kept, 0.0, tol).unwrap();
        assert!(dev.c0.host_values().is_none(), "{what}: C0 was read back");
        let mut host = dev.clone();
        host.c0 = subprune::layer::StatsMatrix::from_host(
            dev.c0.values().unwrap().to_vec(),
            problem.outputs,
        );
        assert_close_scaled(
            &format!("{what}: C0"),
            host.c0.values().unwrap(),
            cpu.c0.values().unwrap(),
            STATS_TOL,
        );
        let host_run = run_greedy(&unprojected, &host, tol, &mut |_, _, _| {}).unwrap();
        assert_eq!(run.order, host_run.order, "{what}");
        let host_rw = subprune::reweight(&host, &kept, 0.0, tol).unwrap();
        assert_eq!(rw, host_rw, "{what}");
    }
}
