//! Launchers of `shaders/sampled_loss.wgsl`: losses over sampled negatives
//! shared by every row (sampled softmax with an optional log-Q correction,
//! binary cross-entropy with a weighted positive).
//!
//! As the cross-entropy: the rows that count are compacted on the host
//! (gathers of h, pos and the targets' log Q), the positive logits come from
//! `pos_logits`, then chunks of rows go through `logits = h @ neg^T`
//! (matmul), the `rows` kernel (per-row loss, logits overwritten in place by
//! their gradients, the positive's gradient), `dh = dlogits @ neg` and
//! `dneg (+)= dlogits^T @ h`; `pos_grads` adds the positive's part to dh and
//! makes dpos, and gathers with the inverse map put the rows back in place.

use bytemuck::{Pod, Zeroable};

use super::WgpuBackend;
use super::cross_entropy::{compact, mean_loss};
use super::dispatch::{Matrix, u32_of};
use super::embedding::gather_rows;
use super::kernel::{Kernel, KernelDesc, Shader, WORKGROUP_REDUCE_WGSL, read, read_write};
use super::matmul::{Gemm, gemm};
use super::memory::{GpuIds, GpuTensor};
use super::recorder::BufferRange;
use crate::{Backend, SampledLoss, SampledLossOutput, contract};

/// Invocations per workgroup.
const WG: u32 = 256;

/// `sampled_loss.wgsl`'s `Params`.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    n: u32,
    dim: u32,
    row0: u32,
    count: u32,
    binary: u32,
    has_log_q: u32,
    with_grad: u32,
    logits_off: u32,
    positive_weight: f32,
}

static SHADER: Shader<Params> = Shader::new(
    "sampled_loss.wgsl",
    include_str!("../../shaders/sampled_loss.wgsl"),
    &[WORKGROUP_REDUCE_WGSL],
    &[("WG", WG)],
);

static POS_LOGITS: Kernel<Params, 4> = Kernel::new(
    &SHADER,
    "pos_logits",
    [
        read(1, "h"),
        read(2, "pos"),
        read(3, "pos_log_q"),
        read_write(4, "pos_logit"),
    ],
);
static ROWS: Kernel<Params, 7> = Kernel::new(
    &SHADER,
    "rows",
    [
        read_write(5, "logits"),
        read(6, "pos_logit_in"),
        read(7, "targets"),
        read(8, "negatives"),
        read(9, "neg_log_q"),
        read_write(10, "loss_rows"),
        read_write(11, "dpos_logit"),
    ],
);
static POS_GRADS: Kernel<Params, 5> = Kernel::new(
    &SHADER,
    "pos_grads",
    [
        read(12, "dpos_logit_in"),
        read(2, "pos"),
        read(1, "h"),
        read_write(13, "dh"),
        read_write(14, "dpos"),
    ],
);

/// Every kernel of the family.
pub(super) fn kernels() -> Vec<KernelDesc<'static>> {
    vec![POS_LOGITS.desc(), ROWS.desc(), POS_GRADS.desc()]
}

#[allow(clippy::too_many_arguments)]
pub(super) fn sampled_loss(
    b: &WgpuBackend,
    h: &GpuTensor,
    pos: &GpuTensor,
    neg: &GpuTensor,
    targets: &GpuIds,
    negatives: &GpuIds,
    loss: SampledLoss<'_, GpuTensor>,
    with_grad: bool,
) -> SampledLossOutput<GpuTensor> {
    let (log_q, binary, positive_weight) = match loss {
        SampledLoss::Softmax { log_q } => (log_q, false, 0.0),
        SampledLoss::Binary { positive_weight } => (None, true, positive_weight),
    };
    let contract::SampledLossDims { rows, dim, n } = contract::sampled_loss(
        &h.shape,
        &pos.shape,
        &neg.shape,
        &targets.host,
        &negatives.host,
        log_q.map(|q| (&q.targets.shape[..], &q.negatives.shape[..])),
    );
    let c = compact(&targets.host, Some(0));
    let count = c.kept.len();
    if count == 0 {
        return SampledLossOutput {
            loss: b.zeros(&[1]),
            count,
            dh: with_grad.then(|| b.zeros(&[rows, dim])),
            dpos: with_grad.then(|| b.zeros(&[rows, dim])),
            dneg: with_grad.then(|| b.zeros(&[n, dim])),
        };
    }

    let kept_buf = b.upload_u32(&c.kept);
    let compacted =
        |t: &GpuTensor, width| gather_rows(b, t.buffer(), (rows, width), kept_buf.buffer(), count);
    let (hc, posc) = (compacted(h, dim), compacted(pos, dim));
    // Without the correction the kernels bind a placeholder they never read.
    let (pos_log_q, neg_log_q) = match log_q {
        Some(q) => (compacted(q.targets, 1), q.negatives.clone()),
        None => (b.zeros(&[1]), b.zeros(&[1])),
    };
    fn whole<'a>(b: &WgpuBackend, t: &'a GpuTensor, what: &str) -> BufferRange<'a> {
        b.whole(t.buffer(), t.numel(), what)
    }
    let targets_buf = b.upload_u32(&c.targets);
    let pos_logit = b.alloc(&[count]);
    let dpos_logit = b.alloc(&[count]);
    let loss_rows = b.alloc(&[count]);
    let params = Params {
        rows: u32_of(count),
        n: u32_of(n),
        dim: u32_of(dim),
        row0: 0,
        count: u32_of(count),
        binary: u32::from(binary),
        has_log_q: u32::from(log_q.is_some()),
        with_grad: u32::from(with_grad),
        logits_off: 0,
        positive_weight,
    };
    let hc_range = b.whole(hc.buffer(), count * dim, "sampled_loss h");
    let posc_range = b.whole(posc.buffer(), count * dim, "sampled_loss pos");
    b.run(
        &POS_LOGITS,
        &params,
        [
            hc_range,
            posc_range,
            whole(b, &pos_log_q, "sampled_loss log Q"),
            whole(b, &pos_logit, "sampled_loss positive logits"),
        ],
        b.grid(count.div_ceil(WG as usize)),
    );

    let dhc = with_grad.then(|| b.alloc(&[count, dim]));
    let dneg = with_grad.then(|| b.alloc(&[n, dim]));
    // Rows per chunk: within the memory budget and one storage binding.
    let budget_rows = (b.inner.ce_chunk_bytes / (4 * n.max(1) as u64)) as usize;
    let chunk_rows = budget_rows
        .min(b.rows_per_binding(n, "sampled_loss logits"))
        .clamp(1, count);
    let logits = b.alloc(&[chunk_rows, n]);
    let (hc_m, neg_m) = (Matrix::of(&hc), Matrix::of(neg));
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
                b: neg_m,
                trans_b: true,
                accumulate: false,
                bias: None,
            },
        );
        b.run(
            &ROWS,
            &Params {
                rows: u32_of(cr),
                row0: u32_of(c0),
                ..params
            },
            [
                b.whole(logits.buffer(), cr * n, "sampled_loss logits"),
                whole(b, &pos_logit, "sampled_loss positive logits"),
                b.whole(targets_buf.buffer(), count, "sampled_loss targets"),
                b.whole(negatives.buffer(), n, "sampled_loss negatives"),
                whole(b, &neg_log_q, "sampled_loss log Q"),
                whole(b, &loss_rows, "sampled_loss losses"),
                whole(b, &dpos_logit, "sampled_loss positive gradients"),
            ],
            b.grid(cr),
        );
        if let (Some(dhc), Some(dneg)) = (&dhc, &dneg) {
            // logits now hold their gradients.
            gemm(
                b,
                Gemm {
                    c: Matrix::of(dhc).rows(c0, cr),
                    a: logits_m,
                    trans_a: false,
                    b: neg_m,
                    trans_b: false,
                    accumulate: false,
                    bias: None,
                },
            );
            gemm(
                b,
                Gemm {
                    c: Matrix::of(dneg),
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
    let loss = mean_loss(b, whole(b, &loss_rows, "sampled_loss losses"), count);

    let (dh, dpos) = match dhc {
        Some(dhc) => {
            let dposc = b.alloc(&[count, dim]);
            b.run(
                &POS_GRADS,
                &params,
                [
                    whole(b, &dpos_logit, "sampled_loss positive gradients"),
                    posc_range,
                    hc_range,
                    b.whole(dhc.buffer(), count * dim, "sampled_loss dh"),
                    b.whole(dposc.buffer(), count * dim, "sampled_loss dpos"),
                ],
                b.grid((count * dim).div_ceil(WG as usize)),
            );
            // Put the rows back in place, zeros for ignored rows.
            let index_buf = b.upload_u32(&c.index);
            let restore =
                |t: &GpuTensor| gather_rows(b, t.buffer(), (count, dim), index_buf.buffer(), rows);
            (Some(restore(&dhc)), Some(restore(&dposc)))
        }
        None => (None, None),
    };
    SampledLossOutput {
        loss,
        count,
        dh,
        dpos,
        dneg,
    }
}
