//! Both backends accept and reject the same inputs: every edge case of the
//! ops' contracts (`sasrec_kernels::contract`) runs on the CPU and on the
//! GPU; either both panic (a programming error, with a message naming the
//! op) or both return the same values.

use std::panic::{AssertUnwindSafe, catch_unwind};

use sasrec_kernels::testing::{BackendPair, Tol, assert_close};
use sasrec_kernels::{AdamStep, AttentionShape, Backend, CpuBackend, Dropout, WgpuBackend};

/// What an op did: its outputs on the host, or the panic message.
type Outcome = Result<Vec<Vec<f32>>, String>;

fn outcome<B: Backend>(b: &B, op: impl FnOnce(&B) -> Vec<B::Tensor>) -> Outcome {
    // The rejected cases panic on purpose; keep their messages off the log.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = catch_unwind(AssertUnwindSafe(|| {
        op(b).iter().map(|t| b.to_vec(t)).collect()
    }));
    std::panic::set_hook(hook);
    result.map_err(|panic| {
        panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    })
}

/// Runs `$body` (a `Vec` of tensors made with the backend `$b`) on both
/// backends and checks that they agree; `$accepted` says which way.
macro_rules! case {
    ($pair:expr, $name:expr, accepted: $accepted:expr, |$b:ident| $body:expr) => {{
        let cpu = outcome(&$pair.cpu, |$b: &CpuBackend| $body);
        let gpu = outcome(&$pair.gpu, |$b: &WgpuBackend| $body);
        compare($name, $accepted, cpu, gpu);
    }};
}

fn compare(name: &str, accepted: bool, cpu: Outcome, gpu: Outcome) {
    match (cpu, gpu) {
        (Ok(cpu), Ok(gpu)) => {
            assert!(
                accepted,
                "{name}: accepted by both backends, expected a panic"
            );
            assert_eq!(cpu.len(), gpu.len(), "{name}: outputs");
            for (i, (c, g)) in cpu.iter().zip(&gpu).enumerate() {
                assert_close(&format!("{name} output {i}"), g, c, Tol::new(1e-5, 1e-6));
            }
        }
        (Err(cpu), Err(gpu)) => {
            assert!(!accepted, "{name}: rejected by both backends: {cpu}");
            let op = name.split_whitespace().next().unwrap_or_default();
            assert!(
                cpu.contains(op),
                "{name}: the CPU's message names no op: {cpu}"
            );
            assert!(
                gpu.contains(op),
                "{name}: the GPU's message names no op: {gpu}"
            );
        }
        (cpu, gpu) => panic!("{name}: the backends disagree: cpu {cpu:?}, gpu {gpu:?}"),
    }
}

fn vals(n: usize) -> Vec<f32> {
    (0..n).map(|i| (i as f32 * 0.37).sin()).collect()
}

#[test]
fn both_backends_accept_and_reject_the_same_inputs() {
    let Some(p) = BackendPair::new() else { return };
    let shape = |batch, heads, head_dim| AttentionShape {
        batch,
        len: 3,
        heads,
        head_dim,
    };

    // Elementwise.
    case!(p, "add of different shapes", accepted: false, |b| vec![
        b.add(&b.zeros(&[2, 3]), &b.zeros(&[3, 2]))
    ]);
    case!(p, "add of empty tensors", accepted: true, |b| vec![
        b.add(&b.zeros(&[0, 3]), &b.zeros(&[0, 3]))
    ]);
    case!(p, "scale by a [1, 1] factor", accepted: false, |b| vec![
        b.scale(&b.zeros(&[4]), &b.tensor(&[2.0], &[1, 1]))
    ]);
    case!(p, "broadcast to a 0-d shape", accepted: true, |b| vec![
        b.broadcast(&b.tensor(&[2.5], &[1]), &[])
    ]);
    case!(p, "dropout of nothing", accepted: true, |b| vec![
        b.dropout(&b.zeros(&[0]), &Dropout::new(0.5, 1, 1, 1))
    ]);

    // Embedding.
    case!(p, "embedding from a 1-D table", accepted: false, |b| vec![
        b.embedding(&b.zeros(&[6]), &b.ids(&[1]))
    ]);
    case!(p, "embedding_backward with a padding id past the table", accepted: false, |b| vec![
        b.embedding_backward(&b.zeros(&[2, 2]), &b.ids(&[1, 9]), 3, Some(9))
    ]);
    case!(p, "embedding_backward with no ids", accepted: true, |b| vec![
        b.embedding_backward(&b.zeros(&[0, 2]), &b.ids(&[]), 3, Some(0))
    ]);

    // LayerNorm: an empty row has no mean; no rows is fine.
    case!(p, "layer_norm of empty rows", accepted: false, |b| {
        let (y, stats) = b.layer_norm(&b.zeros(&[3, 0]), &b.zeros(&[0]), &b.zeros(&[0]), 1e-5);
        vec![y, stats]
    });
    case!(p, "layer_norm of no rows", accepted: true, |b| {
        let (g, beta) = (b.tensor(&[1.0; 4], &[4]), b.zeros(&[4]));
        let (y, stats) = b.layer_norm(&b.zeros(&[0, 4]), &g, &beta, 1e-5);
        vec![y, stats]
    });
    case!(p, "layer_norm_backward of empty rows", accepted: false, |b| {
        let (dx, dg, db) =
            b.layer_norm_backward(&b.zeros(&[2, 0]), &b.zeros(&[2, 0]), &b.zeros(&[0]), &b.zeros(&[2, 2]));
        vec![dx, dg, db]
    });

    // RMSNorm: the same edges as LayerNorm.
    case!(p, "rms_norm of empty rows", accepted: false, |b| {
        let (y, rstd) = b.rms_norm(&b.zeros(&[3, 0]), &b.zeros(&[0]), 1e-6);
        vec![y, rstd]
    });
    case!(p, "rms_norm of no rows", accepted: true, |b| {
        let (y, rstd) = b.rms_norm(&b.zeros(&[0, 4]), &b.tensor(&[1.0; 4], &[4]), 1e-6);
        vec![y, rstd]
    });
    case!(p, "rms_norm_backward with rstd of the wrong length", accepted: false, |b| {
        let (dx, dg) =
            b.rms_norm_backward(&b.zeros(&[2, 3]), &b.zeros(&[2, 3]), &b.zeros(&[3]), &b.zeros(&[3]));
        vec![dx, dg]
    });

    // SwiGLU: one shape for both inputs; empty is fine.
    case!(p, "swiglu of different shapes", accepted: false, |b| vec![
        b.swiglu(&b.zeros(&[2, 3]), &b.zeros(&[3, 2]))
    ]);
    case!(p, "swiglu of nothing", accepted: true, |b| vec![
        b.swiglu(&b.zeros(&[0, 3]), &b.zeros(&[0, 3]))
    ]);

    // Label smoothing outside [0, 1].
    case!(p, "cross_entropy with label smoothing 1.5", accepted: false, |b| {
        let ce = b.cross_entropy_smoothed(&b.zeros(&[1, 2]), &b.zeros(&[3, 2]), &b.ids(&[1]), 1.5, false);
        vec![ce.loss]
    });

    // Matmul: an empty inner size gives zeros.
    case!(p, "matmul with k = 0", accepted: true, |b| vec![
        b.matmul(&b.zeros(&[3, 0]), &b.zeros(&[0, 2]), false, false)
    ]);
    case!(p, "matmul with m = 0", accepted: true, |b| vec![
        b.matmul(&b.zeros(&[0, 4]), &b.tensor(&vals(8), &[4, 2]), false, false)
    ]);
    case!(p, "matmul of a vector", accepted: false, |b| vec![
        b.matmul(&b.zeros(&[4]), &b.zeros(&[4, 2]), false, false)
    ]);
    case!(p, "linear with a bias of the wrong width", accepted: false, |b| vec![
        b.linear(&b.zeros(&[2, 3]), &b.zeros(&[4, 3]), Some(&b.zeros(&[3])))
    ]);
    case!(p, "linear with k = 0 and a bias", accepted: true, |b| vec![
        b.linear(&b.zeros(&[2, 0]), &b.zeros(&[3, 0]), Some(&b.tensor(&vals(3), &[3])))
    ]);

    // Sums.
    case!(p, "sum_rows of a vector", accepted: false, |b| vec![b.sum_rows(&b.zeros(&[5]))]);
    case!(p, "sum_rows of no rows", accepted: true, |b| vec![b.sum_rows(&b.zeros(&[0, 3]))]);
    case!(p, "sum of nothing", accepted: true, |b| vec![b.sum(&b.zeros(&[0]))]);

    // Attention.
    case!(p, "attention with no heads", accepted: false, |b| {
        let (ctx, probs) = b.attention(&b.zeros(&[3, 0]), &b.ids(&[1, 1, 1]), shape(1, 0, 4), None);
        vec![ctx, probs]
    });
    case!(p, "attention with empty heads", accepted: false, |b| {
        let (ctx, probs) = b.attention(&b.zeros(&[3, 0]), &b.ids(&[1, 1, 1]), shape(1, 2, 0), None);
        vec![ctx, probs]
    });
    case!(p, "attention of no sequences", accepted: true, |b| {
        let (ctx, probs) = b.attention(&b.zeros(&[0, 12]), &b.ids(&[]), shape(0, 2, 2), None);
        vec![ctx, probs]
    });
    case!(p, "attention with too few key ids", accepted: false, |b| {
        let (ctx, probs) = b.attention(&b.zeros(&[3, 6]), &b.ids(&[1]), shape(1, 1, 2), None);
        vec![ctx, probs]
    });

    // Cross-entropy: targets index the classes unless ignored.
    case!(p, "cross_entropy over an empty table, every target ignored", accepted: true, |b| {
        let ce = b.cross_entropy(&b.zeros(&[2, 3]), &b.zeros(&[0, 3]), &b.ids(&[0, 0]), true);
        vec![ce.loss, ce.dh.unwrap(), ce.dtable.unwrap()]
    });
    case!(p, "cross_entropy with a target past the table", accepted: false, |b| {
        let ce = b.cross_entropy(&b.zeros(&[2, 3]), &b.zeros(&[4, 3]), &b.ids(&[1, 4]), true);
        vec![ce.loss]
    });
    case!(p, "softmax_cross_entropy of no rows", accepted: true, |b| {
        let ce = b.softmax_cross_entropy(&b.zeros(&[0, 5]), &b.ids(&[]), None, true);
        vec![ce.loss, ce.dlogits.unwrap()]
    });
    case!(p, "softmax_cross_entropy with an ignored target past the classes", accepted: true, |b| {
        let ce = b.softmax_cross_entropy(&b.tensor(&vals(6), &[2, 3]), &b.ids(&[2, 99]), Some(99), true);
        vec![ce.loss, ce.dlogits.unwrap()]
    });
    case!(p, "softmax_cross_entropy with a target past the classes", accepted: false, |b| {
        let ce = b.softmax_cross_entropy(&b.tensor(&vals(6), &[2, 3]), &b.ids(&[2, 3]), None, true);
        vec![ce.loss]
    });

    // Adam.
    case!(p, "adam with a moment of another shape", accepted: false, |b| {
        let hp = AdamStep { lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8, step: 1 };
        let (mut param, mut m, mut v) = (b.zeros(&[4]), b.zeros(&[4]), b.zeros(&[2, 2]));
        b.adam(&mut param, &b.zeros(&[4]), &mut m, &mut v, &hp);
        vec![param]
    });
}
