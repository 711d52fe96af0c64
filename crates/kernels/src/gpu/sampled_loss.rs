//! Launchers of `shaders/sampled_loss.wgsl`: losses over sampled negatives
//! (sampled softmax with an optional log-Q correction, binary cross-entropy
//! with a weighted positive), each row scored against its group's
//! negatives.
//!
//! As the cross-entropy: the rows that count are compacted on the host
//! (gathers of h and of the targets' table rows), the positive logits come
//! from `pos_logits`. Then chunks of rows, within the logits budget and one
//! storage binding, each with its groups' negatives gathered from the
//! table: `negative_logits`, the `rows` kernel (per-row loss, logits
//! overwritten in place by their gradients, the positive's gradient),
//! `dh`, and `negative_grads`, whose rows (one per negative slot and one per
//! row's positive) the embedding's deterministic scatter-add adds into the
//! table's gradient. A gather with the inverse map puts dh's rows back in
//! place.

use bytemuck::{Pod, Zeroable};

use super::cross_entropy::{compact, mean_loss};
use super::device::WgpuBackend;
use super::dispatch::u32_of;
use super::embedding::{gather_rows, scatter_add_rows};
use super::kernel::{Kernel, KernelDesc, Shader, WORKGROUP_REDUCE_WGSL, read, read_write};
use super::memory::{GpuIds, GpuTensor};
use super::recorder::BufferRange;
use crate::{Backend, Negatives, SampledLoss, SampledLossOutput, contract};

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
    slots: u32,
    positive_weight: f32,
}

static SHADER: Shader<Params> = Shader::new(
    "sampled_loss.wgsl",
    include_str!("../../shaders/sampled_loss.wgsl"),
    &[WORKGROUP_REDUCE_WGSL],
    &[("WG", WG)],
);

static POS_LOGITS: Kernel<Params, 5> = Kernel::new(
    &SHADER,
    "pos_logits",
    [
        read(1, "h_c"),
        read(2, "pos_c"),
        read(3, "targets_c"),
        read(4, "log_q"),
        read_write(5, "pos_logit"),
    ],
);
static NEGATIVE_LOGITS: Kernel<Params, 4> = Kernel::new(
    &SHADER,
    "negative_logits",
    [
        read(1, "h_c"),
        read(6, "neg_c"),
        read(7, "row_group"),
        read_write(8, "logits"),
    ],
);
static ROWS: Kernel<Params, 8> = Kernel::new(
    &SHADER,
    "rows",
    [
        read_write(8, "logits"),
        read(10, "pos_logit_in"),
        read(3, "targets_c"),
        read(9, "slot_ids"),
        read(7, "row_group"),
        read(4, "log_q"),
        read_write(11, "loss_rows"),
        read_write(12, "dpos_logit"),
    ],
);
static DH: Kernel<Params, 6> = Kernel::new(
    &SHADER,
    "dh",
    [
        read(13, "dlogits"),
        read(6, "neg_c"),
        read(7, "row_group"),
        read(14, "dpos_logit_in"),
        read(2, "pos_c"),
        read_write(15, "dh_c"),
    ],
);
static NEGATIVE_GRADS: Kernel<Params, 5> = Kernel::new(
    &SHADER,
    "negative_grads",
    [
        read(13, "dlogits"),
        read(1, "h_c"),
        read(16, "group_rows"),
        read(14, "dpos_logit_in"),
        read_write(17, "slot_grads"),
    ],
);

/// Every kernel of the family.
pub(super) fn kernels() -> Vec<KernelDesc<'static>> {
    vec![
        POS_LOGITS.desc(),
        NEGATIVE_LOGITS.desc(),
        ROWS.desc(),
        DH.desc(),
        NEGATIVE_GRADS.desc(),
    ]
}

/// A chunk of the compacted rows `first..end` and its groups: the group
/// (0-based within the chunk) of each row, each group's first row (chunk
/// rows, one past the last at the end), and its groups' negative ids.
struct Chunk {
    first: usize,
    end: usize,
    row_group: Vec<u32>,
    group_rows: Vec<u32>,
    slot_ids: Vec<u32>,
}

/// Cuts the compacted rows `kept` (in increasing order) into chunks whose
/// logits hold at most `logits` floats, whose gathered negatives at most
/// `negatives` floats, and whose negatives' and positives' gradients fit
/// `binding` floats; every chunk has at least one row.
#[allow(clippy::too_many_arguments)]
fn plan_chunks(
    kept: &[u32],
    rows_per_group: usize,
    ids: &[u32],
    n: usize,
    dim: usize,
    logits: usize,
    negatives: usize,
    binding: usize,
) -> Vec<Chunk> {
    let group_of = |k: usize| kept[k] as usize / rows_per_group;
    let mut chunks = Vec::new();
    let mut first = 0;
    while first < kept.len() {
        let (mut end, mut groups) = (first, 0usize);
        while end < kept.len() {
            let new_group = end == first || group_of(end) != group_of(end - 1);
            let g = groups + usize::from(new_group);
            let rows = end + 1 - first;
            let fits = rows * n <= logits.min(binding)
                && g * n * dim <= negatives.min(binding)
                && (g * n + rows) * dim <= binding;
            if end > first && !fits {
                break;
            }
            (end, groups) = (end + 1, g);
        }
        let mut chunk = Chunk {
            first,
            end,
            row_group: Vec::with_capacity(end - first),
            group_rows: Vec::new(),
            slot_ids: Vec::new(),
        };
        for k in first..end {
            if k == first || group_of(k) != group_of(k - 1) {
                let g = group_of(k);
                chunk.group_rows.push(u32_of(k - first));
                chunk.slot_ids.extend_from_slice(&ids[g * n..(g + 1) * n]);
            }
            chunk.row_group.push(u32_of(chunk.group_rows.len() - 1));
        }
        chunk.group_rows.push(u32_of(end - first));
        chunks.push(chunk);
        first = end;
    }
    chunks
}

pub(super) fn sampled_loss(
    b: &WgpuBackend,
    h: &GpuTensor,
    table: &GpuTensor,
    targets: &GpuIds,
    negatives: Negatives<'_, GpuIds>,
    loss: SampledLoss<'_, GpuTensor>,
    with_grad: bool,
) -> SampledLossOutput<GpuTensor> {
    let (log_q, binary, positive_weight) = match loss {
        SampledLoss::Softmax { log_q } => (log_q, false, 0.0),
        SampledLoss::Binary { positive_weight } => (None, true, positive_weight),
    };
    let ids = &negatives.ids.host;
    let dims = contract::sampled_loss(
        &h.shape,
        &table.shape,
        &targets.host,
        ids,
        negatives.per_group,
        log_q.map(|q| &q.shape[..]),
    );
    let contract::SampledLossDims {
        rows,
        dim,
        vocab,
        n,
        ..
    } = dims;
    let c = compact(&targets.host, Some(0));
    let count = c.kept.len();
    if count == 0 {
        return SampledLossOutput {
            loss: b.zeros(&[1]),
            count,
            dh: with_grad.then(|| b.zeros(&[rows, dim])),
            dtable: with_grad.then(|| b.zeros(&[vocab, dim])),
        };
    }

    let kept_buf = b.upload_u32(&c.kept);
    let targets_buf = b.upload_u32(&c.targets);
    let hc = gather_rows(b, h.buffer(), (rows, dim), kept_buf.buffer(), count);
    let posc = gather_rows(b, table.buffer(), (vocab, dim), targets_buf.buffer(), count);
    // Without the correction the kernels bind a placeholder they never read.
    let placeholder;
    let log_q = match log_q {
        Some(q) => q,
        None => {
            placeholder = b.zeros(&[1]);
            &placeholder
        }
    };
    fn whole<'a>(b: &WgpuBackend, t: &'a GpuTensor, what: &str) -> BufferRange<'a> {
        b.whole(t.buffer(), t.numel(), what)
    }
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
        has_log_q: u32::from(matches!(loss, SampledLoss::Softmax { log_q: Some(_) })),
        with_grad: u32::from(with_grad),
        slots: 0,
        positive_weight,
    };
    let hc_range = whole(b, &hc, "sampled_loss h");
    let posc_range = whole(b, &posc, "sampled_loss targets' rows");
    let targets_range = b.whole(targets_buf.buffer(), count, "sampled_loss targets");
    let log_q_range = whole(b, log_q, "sampled_loss log Q");
    b.run(
        &POS_LOGITS,
        &params,
        [
            hc_range,
            posc_range,
            targets_range,
            log_q_range,
            whole(b, &pos_logit, "sampled_loss positive logits"),
        ],
        b.grid(count.div_ceil(WG as usize)),
    );

    let dhc = with_grad.then(|| b.alloc(&[count, dim]));
    let dtable = with_grad.then(|| b.zeros(&[vocab, dim]));
    // Logits within the memory budget, gathered negatives within twice it.
    let logits_budget = (b.inner.ce_chunk_bytes / 4) as usize;
    let chunks = plan_chunks(
        &c.kept,
        dims.rows_per_group().max(1),
        ids,
        n,
        dim,
        logits_budget,
        2 * logits_budget,
        b.binding_elems(),
    );
    for chunk in &chunks {
        let cr = chunk.end - chunk.first;
        let slots = chunk.slot_ids.len();
        assert!(
            cr * n <= b.binding_elems() && (slots + cr) * dim <= b.binding_elems(),
            "sampled_loss: {n} negatives of width {dim} do not fit one storage binding"
        );
        let slot_ids_buf = b.upload_u32(&chunk.slot_ids);
        let row_group_buf = b.upload_u32(&chunk.row_group);
        let neg_c = gather_rows(
            b,
            table.buffer(),
            (vocab, dim),
            slot_ids_buf.buffer(),
            slots,
        );
        let logits = b.alloc(&[cr, n]);
        let chunk_params = Params {
            rows: u32_of(cr),
            row0: u32_of(chunk.first),
            slots: u32_of(slots),
            ..params
        };
        let neg_range = whole(b, &neg_c, "sampled_loss negatives");
        let row_group_range = b.whole(row_group_buf.buffer(), cr, "sampled_loss row groups");
        let logits_range = whole(b, &logits, "sampled_loss logits");
        b.run(
            &NEGATIVE_LOGITS,
            &chunk_params,
            [hc_range, neg_range, row_group_range, logits_range],
            b.grid((cr * n).div_ceil(WG as usize)),
        );
        b.run(
            &ROWS,
            &chunk_params,
            [
                logits_range,
                whole(b, &pos_logit, "sampled_loss positive logits"),
                targets_range,
                b.whole(slot_ids_buf.buffer(), slots, "sampled_loss negative ids"),
                row_group_range,
                log_q_range,
                whole(b, &loss_rows, "sampled_loss losses"),
                whole(b, &dpos_logit, "sampled_loss positive gradients"),
            ],
            b.grid(cr),
        );
        let (Some(dhc), Some(dtable)) = (&dhc, &dtable) else {
            continue;
        };
        // The logits now hold their gradients.
        let dpos_range = whole(b, &dpos_logit, "sampled_loss positive gradients");
        b.run(
            &DH,
            &chunk_params,
            [
                logits_range,
                neg_range,
                row_group_range,
                dpos_range,
                posc_range,
                whole(b, dhc, "sampled_loss dh"),
            ],
            b.grid((cr * dim).div_ceil(WG as usize)),
        );
        let group_rows_buf = b.upload_u32(&chunk.group_rows);
        let slot_grads = b.alloc(&[slots + cr, dim]);
        b.run(
            &NEGATIVE_GRADS,
            &chunk_params,
            [
                logits_range,
                hc_range,
                b.whole(
                    group_rows_buf.buffer(),
                    chunk.group_rows.len(),
                    "sampled_loss group rows",
                ),
                dpos_range,
                whole(b, &slot_grads, "sampled_loss slot gradients"),
            ],
            b.grid(((slots + cr) * dim).div_ceil(WG as usize)),
        );
        // Rows of slot_grads: the negatives' slots, then the rows' positives.
        let mut slot_items = chunk.slot_ids.clone();
        slot_items.extend_from_slice(&c.targets[chunk.first..chunk.end]);
        scatter_add_rows(b, slot_grads.buffer(), &slot_items, None, dtable);
    }
    let loss = mean_loss(b, whole(b, &loss_rows, "sampled_loss losses"), count);

    // Put dh's rows back in place, zeros for ignored rows.
    let dh = dhc.map(|dhc| {
        let index_buf = b.upload_u32(&c.index);
        gather_rows(b, dhc.buffer(), (count, dim), index_buf.buffer(), rows)
    });
    SampledLossOutput {
        loss,
        count,
        dh,
        dtable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_respect_the_budgets_and_keep_groups_together() {
        // 3 groups of 4 rows; rows 0, 1 (group 0) and 6 (group 1) ignored.
        let kept: Vec<u32> = vec![2, 3, 4, 5, 7, 8, 9, 10, 11];
        let ids: Vec<u32> = (1..=6).collect(); // 2 negatives per group
        let chunks = plan_chunks(&kept, 4, &ids, 2, 1, 8, 4, 1 << 20);
        // 4 rows of 2 logits at most, 2 groups of negatives at most.
        let spans: Vec<(usize, usize)> = chunks.iter().map(|c| (c.first, c.end)).collect();
        assert_eq!(spans, [(0, 4), (4, 8), (8, 9)]);
        assert_eq!(chunks[0].row_group, [0, 0, 1, 1]);
        assert_eq!(chunks[0].group_rows, [0, 2, 4]);
        assert_eq!(chunks[0].slot_ids, [1, 2, 3, 4]);
        assert_eq!(chunks[1].row_group, [0, 1, 1, 1]);
        assert_eq!(chunks[1].slot_ids, [3, 4, 5, 6]);
        assert_eq!(chunks[2].slot_ids, [5, 6]);
        // A budget below one row still takes one row per chunk.
        assert_eq!(plan_chunks(&kept, 4, &ids, 2, 1, 1, 1, 1 << 20).len(), 9);
    }
}
