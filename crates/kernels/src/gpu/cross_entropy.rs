//! Launchers of `shaders/cross_entropy.wgsl`: the softmax cross-entropy,
//! fused with the tied output layer (`cross_entropy`, which never holds the
//! whole logits matrix) and over a logits matrix (`softmax_cross_entropy`).
//!
//! Both compact the rows that count on the host (ignored rows cost nothing),
//! run the `rows` kernel (per-row loss, logits overwritten in place by
//! dlogits) over chunks of rows, add the per-row losses in a fixed order in
//! `mean_loss`, and put gradient rows back in place with the embedding
//! gather (zero rows for ignored ones).

use bytemuck::{Pod, Zeroable};

use super::device::WgpuBackend;
use super::dispatch::{Matrix, u32_of};
use super::embedding::{MISSING, gather_rows};
use super::kernel::{Kernel, KernelDesc, Shader, WORKGROUP_REDUCE_WGSL, read, read_write};
use super::matmul::{Gemm, gemm};
use super::memory::{GpuIds, GpuTensor};
use super::recorder::BufferRange;
use crate::{Backend, CrossEntropy, SoftmaxCrossEntropy, contract};

/// Invocations per workgroup (one workgroup per row).
const WG: u32 = 256;

/// `cross_entropy.wgsl`'s `Params`.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    vocab: u32,
    row0: u32,
    count: u32,
    with_grad: u32,
    logits_off: u32,
    smoothing: f32,
}

static SHADER: Shader<Params> = Shader::new(
    "cross_entropy.wgsl",
    include_str!("../../shaders/cross_entropy.wgsl"),
    &[WORKGROUP_REDUCE_WGSL],
    &[("WG", WG)],
);

static ROWS: Kernel<Params, 3> = Kernel::new(
    &SHADER,
    "rows",
    [
        read_write(1, "logits"),
        read(2, "targets"),
        read_write(3, "loss_rows"),
    ],
);
static MEAN_LOSS: Kernel<Params, 2> = Kernel::new(
    &SHADER,
    "mean_loss",
    [read(4, "loss_in"), read_write(5, "loss")],
);

/// Every kernel of the family.
pub(super) fn kernels() -> Vec<KernelDesc<'static>> {
    vec![ROWS.desc(), MEAN_LOSS.desc()]
}

/// The rows whose target is not `ignore`: their indices, their targets,
/// and for every row its index among them ([`MISSING`] if ignored).
pub(super) struct Compacted {
    pub(super) kept: Vec<u32>,
    pub(super) targets: Vec<u32>,
    pub(super) index: Vec<u32>,
}

pub(super) fn compact(targets: &[u32], ignore: Option<u32>) -> Compacted {
    let mut c = Compacted {
        kept: Vec::new(),
        targets: Vec::new(),
        index: vec![MISSING; targets.len()],
    };
    for (r, &t) in targets.iter().enumerate() {
        if Some(t) != ignore {
            c.index[r] = u32_of(c.kept.len());
            c.kept.push(u32_of(r));
            c.targets.push(t);
        }
    }
    c
}

/// The state shared by the chunks of one loss: the compacted targets and
/// the per-row losses.
struct Rows<'a> {
    b: &'a WgpuBackend,
    count: usize,
    vocab: usize,
    smoothing: f32,
    with_grad: bool,
    targets: BufferRange<'a>,
    loss_rows: BufferRange<'a>,
}

impl Rows<'_> {
    /// Losses of rows `row0 .. row0 + rows` from their logits (bound by
    /// `logits`, starting `logits_off` elements in), overwritten with
    /// dlogits when asked.
    fn run(&self, logits: BufferRange<'_>, logits_off: u32, row0: usize, rows: usize) {
        let b = self.b;
        b.run(
            &ROWS,
            &Params {
                rows: u32_of(rows),
                vocab: u32_of(self.vocab),
                row0: u32_of(row0),
                count: u32_of(self.count),
                with_grad: u32::from(self.with_grad),
                logits_off,
                smoothing: self.smoothing,
            },
            [logits, self.targets, self.loss_rows],
            b.grid(rows),
        );
    }

    /// The mean of the per-row losses, `[1]`.
    fn mean(&self) -> GpuTensor {
        mean_loss(self.b, self.loss_rows, self.count)
    }
}

/// The mean of `count` per-row losses, `[1]`, added in a fixed order.
pub(super) fn mean_loss(b: &WgpuBackend, loss_rows: BufferRange<'_>, count: usize) -> GpuTensor {
    let loss = b.alloc(&[1]);
    b.run(
        &MEAN_LOSS,
        &Params {
            count: u32_of(count),
            ..Params::zeroed()
        },
        [loss_rows, b.whole(loss.buffer(), 1, "loss")],
        [1, 1, 1],
    );
    loss
}

pub(super) fn cross_entropy(
    b: &WgpuBackend,
    h: &GpuTensor,
    table: &GpuTensor,
    targets: &GpuIds,
    smoothing: f32,
    with_grad: bool,
) -> CrossEntropy<GpuTensor> {
    let contract::CrossEntropyDims { rows, dim, vocab } =
        contract::cross_entropy_smoothed(&h.shape, &table.shape, &targets.host, smoothing);
    let c = compact(&targets.host, Some(0));
    let count = c.kept.len();
    if count == 0 {
        return CrossEntropy {
            loss: b.zeros(&[1]),
            count,
            dh: with_grad.then(|| b.zeros(&[rows, dim])),
            dtable: with_grad.then(|| b.zeros(&[vocab, dim])),
        };
    }

    let kept_buf = b.upload_u32(&c.kept);
    let hc = gather_rows(b, h.buffer(), (rows, dim), kept_buf.buffer(), count);
    let targets_buf = b.upload_u32(&c.targets);
    let loss_rows = b.alloc(&[count]);
    let dhc = with_grad.then(|| b.alloc(&[count, dim]));
    let dtable = with_grad.then(|| b.alloc(&[vocab, dim]));

    // Rows per chunk: within the memory budget and one storage binding.
    let budget_rows = (b.inner.ce_chunk_bytes / (4 * vocab.max(1) as u64)) as usize;
    let chunk_rows = budget_rows
        .min(b.rows_per_binding(vocab, "cross_entropy logits"))
        .clamp(1, count);
    let logits = b.alloc(&[chunk_rows, vocab]);
    let (hc_m, tm) = (Matrix::of(&hc), Matrix::of(table));
    let pass = Rows {
        b,
        count,
        vocab,
        smoothing,
        with_grad,
        targets: b.whole(targets_buf.buffer(), count, "cross_entropy targets"),
        loss_rows: b.whole(loss_rows.buffer(), count, "cross_entropy losses"),
    };

    for c0 in (0..count).step_by(chunk_rows) {
        let cr = chunk_rows.min(count - c0);
        let logits_m = Matrix::of(&logits).rows(0, cr);
        let h_chunk = hc_m.rows(c0, cr);
        gemm(
            b,
            Gemm {
                c: logits_m,
                a: h_chunk,
                trans_a: false,
                b: tm,
                trans_b: true,
                accumulate: false,
                bias: None,
            },
        );
        let logits_range = b.whole(logits.buffer(), cr * vocab, "cross_entropy logits");
        pass.run(logits_range, 0, c0, cr);
        if let (Some(dhc), Some(dtable)) = (&dhc, &dtable) {
            // logits now hold dlogits.
            gemm(
                b,
                Gemm {
                    c: Matrix::of(dhc).rows(c0, cr),
                    a: logits_m,
                    trans_a: false,
                    b: tm,
                    trans_b: false,
                    accumulate: false,
                    bias: None,
                },
            );
            gemm(
                b,
                Gemm {
                    c: Matrix::of(dtable),
                    a: logits_m,
                    trans_a: true,
                    b: h_chunk,
                    trans_b: false,
                    accumulate: c0 > 0,
                    bias: None,
                },
            );
        }
    }

    let loss = pass.mean();
    // Put the gradient rows back in place, zeros for ignored rows.
    let dh = dhc.map(|dhc| {
        let index_buf = b.upload_u32(&c.index);
        gather_rows(b, dhc.buffer(), (count, dim), index_buf.buffer(), rows)
    });
    CrossEntropy {
        loss,
        count,
        dh,
        dtable,
    }
}

pub(super) fn softmax_cross_entropy(
    b: &WgpuBackend,
    logits: &GpuTensor,
    targets: &GpuIds,
    ignore_index: Option<u32>,
    with_grad: bool,
) -> SoftmaxCrossEntropy<GpuTensor> {
    let (rows, classes) =
        contract::softmax_cross_entropy(&logits.shape, &targets.host, ignore_index);
    let c = compact(&targets.host, ignore_index);
    let count = c.kept.len();
    if count == 0 {
        return SoftmaxCrossEntropy {
            loss: b.zeros(&[1]),
            count,
            dlogits: with_grad.then(|| b.zeros(&[rows, classes])),
        };
    }

    // A compacted copy of the rows that count, which the kernel overwrites
    // with dlogits.
    let kept_buf = b.upload_u32(&c.kept);
    let z = gather_rows(
        b,
        logits.buffer(),
        (rows, classes),
        kept_buf.buffer(),
        count,
    );
    let targets_buf = b.upload_u32(&c.targets);
    let loss_rows = b.alloc(&[count]);
    let pass = Rows {
        b,
        count,
        vocab: classes,
        smoothing: 0.0,
        with_grad,
        targets: b.whole(targets_buf.buffer(), count, "softmax_cross_entropy targets"),
        loss_rows: b.whole(loss_rows.buffer(), count, "softmax_cross_entropy losses"),
    };
    let chunk_rows = b.rows_per_binding(classes, "softmax_cross_entropy logits");
    for c0 in (0..count).step_by(chunk_rows) {
        let cr = chunk_rows.min(count - c0);
        let (range, off) = b.range(z.buffer(), c0 * classes, cr * classes);
        pass.run(range, off, c0, cr);
    }
    let loss = pass.mean();
    let dlogits = with_grad.then(|| {
        let index_buf = b.upload_u32(&c.index);
        gather_rows(b, z.buffer(), (count, classes), index_buf.buffer(), rows)
    });
    SoftmaxCrossEntropy {
        loss,
        count,
        dlogits,
    }
}
