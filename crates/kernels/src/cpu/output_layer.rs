//! The fused cross-entropy's three products with the item table, with f32
//! operands (`sgemm/`) or bf16 ones (`bf16.rs`): the chunk loop of
//! `cross_entropy.rs` is the same for both.

use super::bf16::{self, Bf16Kernel, Bf16OutputLayer, BlockShift};
use super::sgemm::{NC, PackedB, sgemm_both_sides, sgemm_packed_rows};

/// The products of one call of the fused cross-entropy, set up for its
/// table `[vocab, dim]` (packed once) and chunks of at most `chunk_rows`
/// rows.
pub(super) enum OutputProducts {
    /// f32: the transposed table packed for sgemm, and the chunk's logits
    /// `[chunk_rows, vocab]`.
    Fp32 {
        dim: usize,
        vocab: usize,
        table_t: PackedB,
        logits: Vec<f32>,
    },
    /// bf16 operands, f32 accumulation.
    Bf16(Bf16OutputLayer),
}

impl OutputProducts {
    /// f32 products, or bf16 ones with the `bf16` kernel.
    pub(super) fn new(
        bf16: Option<Bf16Kernel>,
        table: &[f32],
        dim: usize,
        vocab: usize,
        chunk_rows: usize,
        with_grad: bool,
    ) -> Self {
        match bf16 {
            None => OutputProducts::Fp32 {
                dim,
                vocab,
                table_t: PackedB::new(table, true, dim, vocab),
                logits: vec![0.0; chunk_rows * vocab],
            },
            Some(kernel) => {
                OutputProducts::Bf16(Bf16OutputLayer::new(kernel, table, dim, vocab, with_grad))
            }
        }
    }

    /// Columns per block of the logits: [`NC`] for f32 products,
    /// [`bf16::BLOCK_COLS`] for bf16 ones.
    pub(super) fn block_cols(&self) -> usize {
        match self {
            OutputProducts::Fp32 { .. } => NC,
            OutputProducts::Bf16(_) => bf16::BLOCK_COLS,
        }
    }

    /// `z = h @ table^T` for `rows` rows of `h` (`[rows, dim]`), then
    /// `finish(row, block, values, floor)` on each row of each block of
    /// [`OutputProducts::block_cols`] columns while it is in cache (it may
    /// rewrite them: the softmax's exp, shifted by at least `floor`), its
    /// result going to `out[row * blocks + block]`. The f32 products pass
    /// a floor of -inf; the bf16 ones, the shift of the row's previous
    /// block (see [`Bf16OutputLayer::logits`]).
    pub(super) fn logits<T: Send + BlockShift>(
        &mut self,
        rows: usize,
        h: &[f32],
        out: &mut [T],
        finish: impl Fn(usize, usize, &mut [f32], f32) -> T + Sync,
    ) {
        match self {
            OutputProducts::Fp32 {
                dim,
                vocab,
                table_t,
                logits,
            } => {
                let z = &mut logits[..rows * *vocab];
                let finish = |r, b, z: &mut [f32]| finish(r, b, z, f32::NEG_INFINITY);
                sgemm_packed_rows(rows, *dim, *vocab, h, table_t, z, out, finish);
            }
            OutputProducts::Bf16(layer) => layer.logits(rows, h, out, finish),
        }
    }

    /// From the finished logits of the last [`OutputProducts::logits`]:
    /// `dh = (s z) @ table` (`[rows, dim]`, overwritten) and `dtable += (s
    /// z)^T @ h` (`[vocab, dim]`), every value of a row's block of
    /// columns multiplied by its scale `s`, `scales` `[rows, blocks]`
    /// (proportional to `e^shift` of the blocks along a row).
    pub(super) fn backward(
        &mut self,
        rows: usize,
        scales: &[f32],
        table: &[f32],
        h: &[f32],
        dh: &mut [f32],
        dtable: &mut [f32],
    ) {
        match self {
            OutputProducts::Fp32 {
                dim, vocab, logits, ..
            } => {
                let z = &logits[..rows * *vocab];
                sgemm_both_sides(rows, *vocab, *dim, z, scales, table, dh, h, dtable);
            }
            OutputProducts::Bf16(layer) => layer.backward(rows, scales, h, dh, dtable),
        }
    }

    /// After the last chunk: adds to `dtable` what the products kept aside
    /// (the AMX kernel's transposed sums; nothing otherwise).
    pub(super) fn finish(&mut self, dtable: &mut [f32]) {
        if let OutputProducts::Bf16(layer) = self {
            layer.finish(dtable);
        }
    }
}
