//! The backends themselves: tensor handles and their sharing, the GPU's
//! buffer pool, adapters, per-kernel profiling, and grids larger than one
//! dimension holds.

mod common;

use common::{BE, rng, uniform};
use sasrec_kernels::cpu::CpuTensor;
use sasrec_kernels::gpu::{self, GpuOptions};
use sasrec_kernels::testing::{BackendPair, Tol};
use sasrec_kernels::{AdamStep, AttentionShape, Backend, Dropout};

// ----- CPU ---------------------------------------------------------------------

#[test]
fn tensor_handles_share_until_written() {
    let a = CpuTensor::new((0..6).map(|v| v as f32).collect(), &[2, 3]);
    let mut b = a.clone();
    b.data_mut()[0] = 10.0;
    assert_eq!(a.data()[0], 0.0, "writing a clone changed the original");
    assert_eq!(b.data()[0], 10.0);
    assert_eq!(a.dims2("test"), (2, 3));
    assert_eq!(a.view()[[1, 2]], 5.0);
    assert_eq!(BE.to_vec(&a), a.clone().into_vec());
    assert_eq!(BE.zeros(&[0, 4]).len(), 0);
    // Debug shows the shape and the first values only.
    let big = CpuTensor::zeros(&[1000, 1000]);
    assert!(format!("{big:?}").len() < 100);
    assert!(BE.name().starts_with("cpu ("));
}

#[test]
#[should_panic(expected = "tensor: 5 values do not fill shape [2, 3]")]
fn tensor_rejects_wrong_length() {
    CpuTensor::new(vec![0.0; 5], &[2, 3]);
}

// ----- GPU ---------------------------------------------------------------------

#[test]
fn pooled_buffers_come_back_zeroed_and_uploads_land_in_order() {
    let Some(gpu) = gpu::test_backend() else {
        return;
    };
    // Free a buffer, then take the same size class twice: zeros() must
    // clear it and an upload must not overwrite a value still being read.
    let a = gpu.tensor(&[5.0; 300], &[300]);
    let doubled = gpu.add(&a, &a);
    drop(a);
    let z = gpu.zeros(&[300]);
    let b = gpu.tensor(&[1.0; 300], &[300]);
    assert_eq!(gpu.to_vec(&doubled), vec![10.0; 300]);
    assert_eq!(gpu.to_vec(&z), vec![0.0; 300]);
    assert_eq!(gpu.to_vec(&b), vec![1.0; 300]);
}

#[test]
fn list_adapters_reports_the_test_adapter() {
    let Some(gpu) = gpu::test_backend() else {
        return;
    };
    let adapters = gpu::list_adapters();
    assert!(
        adapters.iter().any(|a| a.name == gpu.adapter_name()),
        "{adapters:?}"
    );
    assert!(
        adapters
            .iter()
            .all(|a| a.max_storage_buffer_binding_size > 0)
    );
    assert!(gpu.name().contains(gpu.adapter_name()));
}

#[test]
fn profiling_reports_time_per_kernel() {
    let Some(gpu) = gpu::test_backend_with(GpuOptions::default()) else {
        return;
    };
    if gpu.enable_profiling().is_err() {
        eprintln!("skipping: no timestamp queries on {}", gpu.adapter_name());
        return;
    }
    let a = gpu.tensor(&[1.0; 64 * 64], &[64, 64]);
    let c = gpu.matmul(&a, &a, false, true);
    let _ = gpu.to_vec(&c);
    let report = gpu.profile_report();
    let matmul = report
        .iter()
        .find(|k| k.kernel == "matmul.wgsl:matmul[nt]")
        .unwrap_or_else(|| panic!("no matmul in {report:?}"));
    assert_eq!(matmul.calls, 1);
    assert!(matmul.total_ms >= 0.0);
    gpu.reset_profile();
    assert!(gpu.profile_report().is_empty());
}

// ----- grids that spill into the second dimension ----------------------------------

#[test]
fn elementwise_grid_past_65535_workgroups() {
    // 65 537 workgroups of 256: more than one grid dimension holds.
    let Some(p) = BackendPair::new() else { return };
    let n = 65_536 * 256 + 1;
    let a: Vec<f32> = (0..n).map(|i| (i % 1000) as f32 * 0.5).collect();
    let b: Vec<f32> = (0..n).map(|i| (i % 777) as f32).collect();
    let (ca, ga) = p.tensor(&a, &[n]);
    let (cb, gb) = p.tensor(&b, &[n]);
    p.check(
        "add",
        &p.cpu.add(&ca, &cb),
        &p.gpu.add(&ga, &gb),
        Tol::EXACT,
    );
}

/// Every family on a GPU limited to 100 workgroups per grid dimension, so
/// that every launcher's flat grid spills into y, against the CPU.
#[test]
fn every_family_on_grids_of_100_workgroups_per_dimension() {
    let Some(p) = BackendPair::with(GpuOptions {
        max_workgroups_per_dimension: Some(100),
        ..GpuOptions::default()
    }) else {
        return;
    };
    let (cpu, gpu) = (&p.cpu, &p.gpu);
    let mut r = rng(40);
    let close = Tol::new(1e-4, 1e-5);

    // 118 workgroups of 256.
    let n = 30_000;
    let (ca, ga) = p.tensor(&uniform(&mut r, n, 1.0), &[n]);
    let (cb, gb) = p.tensor(&uniform(&mut r, n, 1.0), &[n]);
    p.check("add", &cpu.add(&ca, &cb), &gpu.add(&ga, &gb), Tol::EXACT);
    let mask = Dropout::new(0.5, 1, 2, 3);
    p.check(
        "dropout",
        &cpu.dropout(&ca, &mask),
        &gpu.dropout(&ga, &mask),
        Tol::EXACT,
    );
    let hp = AdamStep {
        lr: 1e-2,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        step: 1,
    };
    let (mut cp, mut gp) = (ca.clone(), ga.clone());
    let (mut cm, mut gm) = (cpu.zeros(&[n]), gpu.zeros(&[n]));
    let (mut cv, mut gv) = (cpu.zeros(&[n]), gpu.zeros(&[n]));
    cpu.adam(&mut cp, &cb, &mut cm, &mut cv, &hp);
    gpu.adam(&mut gp, &gb, &mut gm, &mut gv, &hp);
    p.check("adam", &cp, &gp, Tol::new(1e-5, 1e-7));
    let mut with_nan = uniform(&mut r, n, 1.0);
    with_nan[n - 1] = f32::NAN;
    assert_eq!(gpu.count_non_finite(&[&gpu.tensor(&with_nan, &[n])]), [1]);

    // 118 workgroups for 3000 rows of 10.
    let (vocab, dim) = (4000, 10);
    let ids: Vec<u32> = (0..3000).map(|i| (i * 7 % vocab) as u32).collect();
    let (ct, gt) = p.tensor(&uniform(&mut r, vocab * dim, 1.0), &[vocab, dim]);
    let (cids, gids) = p.ids(&ids);
    p.check(
        "embedding",
        &cpu.embedding(&ct, &cids),
        &gpu.embedding(&gt, &gids),
        Tol::EXACT,
    );
    let (cdy, gdy) = p.tensor(&uniform(&mut r, ids.len() * dim, 1.0), &[ids.len(), dim]);
    p.check(
        "embedding_backward",
        &cpu.embedding_backward(&cdy, &cids, vocab, None),
        &gpu.embedding_backward(&gdy, &gids, vocab, None),
        Tol::EXACT,
    );

    // One workgroup per row: 1000.
    let rows = 1000;
    let (cx, gx) = p.tensor(&uniform(&mut r, rows * dim, 1.0), &[rows, dim]);
    let (cg, gg) = p.tensor(&uniform(&mut r, dim, 1.0), &[dim]);
    let (cy, cstats) = cpu.layer_norm(&cx, &cg, &cg, 1e-5);
    let (gy, gstats) = gpu.layer_norm(&gx, &gg, &gg, 1e-5);
    p.check("layer_norm", &cy, &gy, close);
    let (cdy, gdy) = p.tensor(&uniform(&mut r, rows * dim, 1.0), &[rows, dim]);
    let (cdx, cdg, _) = cpu.layer_norm_backward(&cdy, &cx, &cg, &cstats);
    let (gdx, gdg, _) = gpu.layer_norm_backward(&gdy, &gx, &gg, &gstats);
    p.check("layer_norm dx", &cdx, &gdx, close);
    p.check("layer_norm dgamma", &cdg, &gdg, Tol::new(1e-4, 1e-4));
    let (cz, gz) = p.tensor(&uniform(&mut r, rows * dim, 3.0), &[rows, dim]);
    let targets: Vec<u32> = (0..rows).map(|i| (i % dim) as u32).collect();
    let (ctg, gtg) = p.ids(&targets);
    let c = cpu.softmax_cross_entropy(&cz, &ctg, None, true);
    let g = gpu.softmax_cross_entropy(&gz, &gtg, None, true);
    p.check("softmax_cross_entropy", &c.loss, &g.loss, close);
    p.check(
        "dlogits",
        c.dlogits.as_ref().unwrap(),
        g.dlogits.as_ref().unwrap(),
        close,
    );
    let (ch, gh) = p.tensor(&uniform(&mut r, rows * dim, 1.0), &[rows, dim]);
    let (ctg, gtg) = p.ids(
        &targets
            .iter()
            .map(|&t| t * 311 % vocab as u32)
            .collect::<Vec<_>>(),
    );
    let c = cpu.cross_entropy(&ch, &ct, &ctg, true);
    let g = gpu.cross_entropy(&gh, &gt, &gtg, true);
    p.check("cross_entropy loss", &c.loss, &g.loss, close);
    p.check(
        "cross_entropy dh",
        c.dh.as_ref().unwrap(),
        g.dh.as_ref().unwrap(),
        close,
    );

    // 11 column groups x 10 blocks of rows.
    let (cs, gs) = p.tensor(&uniform(&mut r, 2560 * 700, 1.0), &[2560, 700]);
    p.check(
        "sum_rows",
        &cpu.sum_rows(&cs),
        &gpu.sum_rows(&gs),
        Tol::new(1e-4, 1e-4),
    );

    // Split-K over k = 1300, then split_k_sum over 170 x 170 (113 workgroups).
    let (ck, gk) = p.tensor(&uniform(&mut r, 1300 * 170, 1.0), &[1300, 170]);
    p.check(
        "split-K matmul",
        &cpu.matmul(&ck, &ck, true, false),
        &gpu.matmul(&gk, &gk, true, false),
        Tol::new(1e-4, 1e-4),
    );

    // 4 x 2 x 20 = 160 query rows.
    let shape = AttentionShape {
        batch: 4,
        len: 20,
        heads: 2,
        head_dim: 3,
    };
    let (cq, gq) = p.tensor(&uniform(&mut r, 80 * 18, 1.0), &[80, 18]);
    let (ck, gk) = p.ids(&(0..80).map(|i| i % 7).collect::<Vec<u32>>());
    let (cctx, cprobs) = cpu.attention(&cq, &ck, shape, Some(&mask));
    let (gctx, gprobs) = gpu.attention(&gq, &gk, shape, Some(&mask));
    p.check("attention ctx", &cctx, &gctx, close);
    let (cdc, gdc) = p.tensor(&uniform(&mut r, 80 * 6, 1.0), &[80, 6]);
    p.check(
        "attention dqkv",
        &cpu.attention_backward(&cdc, &cq, &cprobs, shape, Some(&mask)),
        &gpu.attention_backward(&gdc, &gq, &gprobs, shape, Some(&mask)),
        close,
    );
}
