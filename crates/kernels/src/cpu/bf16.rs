//! bf16 operands with f32 accumulation: the fused cross-entropy's three
//! products with the item table when the CPU backend runs with
//! [`Precision::Bf16`] (`sasrec train --precision bf16`).
//!
//! bf16 is f32 with its mantissa cut to 7 stored bits: the same range, a
//! relative rounding error of at most 2^-8 (f32: 2^-24). The products round
//! both operands to bf16 (to nearest, ties to even) and multiply-add them
//! into f32 accumulators. The product of two bf16 values is exact in f32,
//! so the only errors are the two operand roundings and the f32 sums
//! (docs/numerics.md has the bounds). The weights, their gradients, Adam's
//! state and the softmax stay f32.
//!
//! Two kernels, chosen at run time by [`Bf16Kernel::detect`]:
//!
//! - **AMX** (Sapphire Rapids and later Xeons): `tdpbf16ps` multiplies a
//!   16 x 32 bf16 tile by a 32 x 16 one into a 16 x 16 f32 tile, 16,384
//!   flops per instruction; stable Rust reaches it through `asm!`, and Linux
//!   grants the tile state on request (`arch_prctl`).
//! - **AVX512-BF16** (Zen 4, Cooper Lake, Sapphire Rapids): `vdpbf16ps`
//!   adds the dot products of 16 pairs of bf16 into 16 f32 lanes; register
//!   tiles of 6 x 64 as in `sgemm/avx512.rs`.
//!
//! CPUs with neither get a clear refusal ([`Bf16Unsupported`]): emulating
//! bf16 would be slower than the f32 products.
//!
//! Both kernels multiply *pairs* of bf16 along the product's inner
//! dimension, so an operand is laid out in pairs along it: two values of
//! consecutive `k` in one 32-bit word ("VNNI" layout). The same layouts
//! serve both kernels:
//!
//! ```text
//! once per call:  table_t     [vocab/16][dim/2][16]  pairs along dim   (logits: h @ table^T)
//!                 table_pairs [vocab/2][dim]         pairs along items (dh: z @ table)
//! per chunk of rows, tasks over (part of 512 rows, slice of blocks); a task
//! walks its slice's blocks of 256 columns in order, and per block each
//! group of 32 rows (its f32 block, 32 KiB, in L1):
//!     z = h @ table^T in f32, then `finish` on each row (the softmax's exp)
//!     with gradients:
//!         dh_part[row, slice] += bf16(z) @ table[block]          (scaled later)
//!         z_pairs[row pair, block] = bf16(z) of two rows, interleaved
//! backward of the chunk:
//!     dh[row]        = sum over slices s of scale[row, last block of s] dh_part[row, s]
//!     dtable[block] += z_pairs[:, block]^T @ bf16(scale[:, b] h)
//! ```
//!
//! The `dh` product runs inside the logits phase, on the block of `z` that
//! was just computed and is still in L1; only `dtable`'s operand, `z` in
//! bf16 with pairs along rows, goes to memory (half the bytes of f32 `z`).
//! One pass over the block makes both bf16 copies, and the pairs go out
//! with streamed stores, 1 KiB in a row: at seed scale they are 450 MB
//! per step, written once and read once by the backward, which no cache
//! holds.
//!
//! Summing `dh` over a slice in place needs one scale for the slice's
//! blocks. The softmax's scale of a block is proportional to `e^shift`,
//! the shift its exp subtracted, so `finish` shifts each block by at least
//! the shift of the row's block before it in the slice (its floor), and
//! where the shift grows, the row's sum so far is multiplied by `e^(old -
//! new) <= 1` first: the sum is then in the frame of the slice's last
//! block. With the shift 0 that bounded logits allow (every row at the
//! model's sizes) the shifts never change. The slices are as many as make
//! 32 tasks with the parts, fixed by the sizes.
//!
//! Determinism: every output element is summed in an order fixed by the
//! sizes (the tile's `k` steps, the blocks in order), and the tasks write
//! disjoint outputs, so the bits do not depend on the thread count. They
//! differ between the two kernels (and from the f32 path).

use std::cell::RefCell;
use std::fmt;
use std::sync::{Mutex, OnceLock};

use rayon::prelude::*;

use super::line_buf::LineBuf;
use super::sgemm::SharedMut;

/// Operand precision of the fused cross-entropy's products on the CPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    /// f32 operands (the default; the reference).
    #[default]
    Fp32,
    /// bf16 operands, f32 accumulation (see this module's docs).
    Bf16,
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
        })
    }
}

impl std::str::FromStr for Precision {
    type Err = String;

    /// "fp32" or "bf16".
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fp32" => Ok(Precision::Fp32),
            "bf16" => Ok(Precision::Bf16),
            other => Err(format!("unknown precision {other:?} (fp32 or bf16)")),
        }
    }
}

/// The instructions that run the bf16 products.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bf16Kernel {
    /// AMX-BF16 tiles (`tdpbf16ps`).
    Amx,
    /// AVX512-BF16 (`vdpbf16ps`) in zmm registers.
    Avx512Bf16,
}

impl Bf16Kernel {
    /// Every kernel, fastest first.
    pub const ALL: [Bf16Kernel; 2] = [Bf16Kernel::Amx, Bf16Kernel::Avx512Bf16];

    /// The fastest kernel this CPU (and, for AMX, the OS) supports, or
    /// `None` (detected once).
    pub fn detect() -> Option<Bf16Kernel> {
        static KERNEL: OnceLock<Option<Bf16Kernel>> = OnceLock::new();
        *KERNEL.get_or_init(|| Bf16Kernel::ALL.into_iter().find(|k| k.supported()))
    }

    /// Whether this CPU can run the kernel. The AMX kernel also converts
    /// with AVX512-BF16 instructions, so it needs both; on Linux the first
    /// call asks the kernel for the AMX tile state.
    pub fn supported(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            let avx512_bf16 = std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512bf16");
            match self {
                Bf16Kernel::Avx512Bf16 => avx512_bf16,
                Bf16Kernel::Amx => avx512_bf16 && amx::available(),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        false
    }
}

impl fmt::Display for Bf16Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Bf16Kernel::Amx => "AMX",
            Bf16Kernel::Avx512Bf16 => "AVX512-BF16",
        })
    }
}

/// This CPU cannot run bf16 products (or the kernel asked for).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bf16Unsupported {
    /// The kernel asked for; `None`: any.
    pub kernel: Option<Bf16Kernel>,
}

impl fmt::Display for Bf16Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kernel {
            None => write!(
                f,
                "bf16 products need a CPU with AVX512-BF16 (Zen 4, Cooper Lake or Sapphire Rapids and later) or AMX-BF16, and this one has neither; use fp32"
            ),
            Some(Bf16Kernel::Amx) => write!(
                f,
                "the AMX bf16 kernel needs AMX-BF16 and AVX512-BF16, and an OS that grants the tile state (Linux 5.16 or later); this CPU or OS does not"
            ),
            Some(Bf16Kernel::Avx512Bf16) => write!(f, "this CPU lacks AVX512-BF16"),
        }
    }
}

impl std::error::Error for Bf16Unsupported {}

/// The bits of `x` rounded to bf16 as the CPU's bf16 instructions round:
/// to nearest, ties to even; subnormals to zero of the same sign; NaN to a
/// quiet NaN of the same sign.
pub(crate) fn bf16_bits(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) | 0x0040) as u16;
    }
    if x.is_subnormal() {
        return ((bits >> 16) & 0x8000) as u16;
    }
    let round = 0x7fff + ((bits >> 16) & 1);
    (bits.wrapping_add(round) >> 16) as u16
}

/// The f32 value of bf16 bits.
#[cfg(test)]
fn bf16_value(bits: u16) -> f32 {
    f32::from_bits((bits as u32) << 16)
}

/// Rows of `z` per group: two AMX tiles.
const GROUP: usize = 32;

/// Columns per block of the logits: the f32 block of a group (`GROUP x
/// BLOCK_COLS`, 32 KiB) stays in L1 while it is finished and converted.
pub(crate) const BLOCK_COLS: usize = 256;

/// The fewest tasks the logits phase is split into when the vocabulary
/// allows: a number fixed by the sizes, so that the sums' order, and with
/// it the bits, do not depend on the thread count.
const LOGITS_TASKS: usize = 32;

/// What `finish` returns for a row's block of logits (see
/// [`Bf16OutputLayer::logits`]).
pub(crate) trait BlockShift {
    /// The shift the block's values were finished with: `finish` turned
    /// `z` into `e^(z - shift)` times a factor common to the row.
    fn shift(&self) -> f32;
}

/// Rows per logits task at most (sixteen groups, a whole chunk of the
/// fused cross-entropy): each block of the table (64 KiB in its two
/// layouts) is read from memory once per chunk and from L2 by each group.
const PART_ROWS: usize = 16 * GROUP;

/// The per-thread scratch buffers of the tasks (grown once, reused).
#[derive(Default)]
struct Scratch {
    /// A group's block of logits, f32 `[GROUP][BLOCK_COLS]`.
    z: LineBuf<f32>,
    /// The same in bf16, `[GROUP][BLOCK_COLS]`.
    z_bf16: LineBuf<u16>,
    /// The scaled `h` of one block.
    h_scaled: ScaledH,
}

/// `bf16(scale h)` for the `dtable` product of one block (or of all, where
/// their scales are the same), as each kernel reads it.
#[derive(Default)]
struct ScaledH {
    /// Transposed, `[dp][rows]` (AMX).
    t: LineBuf<u16>,
    /// In pairs of rows, `[rows / 2][dp]` (AVX512-BF16).
    pairs: LineBuf<u32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// How a chunk's blocks of columns are cut into slices, each summed into
/// one part of `dh`: fixed by the chunk's rows and the blocks, so the
/// logits and the backward derive the same cut.
#[derive(Clone, Copy)]
struct Slices {
    /// Slices of the chunk (`dh_part` is `[rows][count][dp]`).
    count: usize,
    /// Blocks per slice (the last slice may have fewer).
    blocks_per_slice: usize,
    blocks: usize,
}

impl Slices {
    /// As many slices as make [`LOGITS_TASKS`] tasks with the parts of
    /// `rows` rows, where the blocks allow.
    fn new(rows: usize, blocks: usize) -> Slices {
        let parts = rows.next_multiple_of(GROUP).div_ceil(PART_ROWS);
        let blocks_per_slice = blocks.div_ceil(LOGITS_TASKS.div_ceil(parts)).max(1);
        Slices {
            count: blocks.div_ceil(blocks_per_slice),
            blocks_per_slice,
            blocks,
        }
    }

    /// The blocks of slice `slice`.
    fn blocks(&self, slice: usize) -> std::ops::Range<usize> {
        slice * self.blocks_per_slice..((slice + 1) * self.blocks_per_slice).min(self.blocks)
    }
}

/// Where [`Bf16OutputLayer::dh_group`] puts a block's product.
#[derive(Clone, Copy)]
struct DhTarget {
    /// The slice of `dh_part`, of `slices`.
    slice: usize,
    slices: usize,
    /// Whether to add to what the slice holds (every block but its first).
    accumulate: bool,
}

/// The chunk buffers of the last [`Bf16OutputLayer`] (tens of MiB at seed
/// scale), kept for the next call (the next step): growing a new one would
/// write zeros over all of it every step, which the kernels then overwrite.
static CHUNK_BUFFERS: Mutex<Option<ChunkBuffers>> = Mutex::new(None);

/// See [`Bf16OutputLayer`]'s fields of the same names.
#[derive(Default)]
struct ChunkBuffers {
    z_pairs: LineBuf<u32>,
    dh_part: LineBuf<f32>,
}

/// The fused cross-entropy's products with the item table in bf16, for one
/// call (one table): see the module docs.
pub(crate) struct Bf16OutputLayer {
    kernel: Bf16Kernel,
    dim: usize,
    vocab: usize,
    /// `dim` rounded up to 32 (at least 32): the packed width.
    dp: usize,
    /// `vocab` rounded up to 64: the packed length.
    vp: usize,
    /// Blocks of [`BLOCK_COLS`] columns.
    blocks: usize,
    with_grad: bool,
    /// `table^T` in pairs along `dim`: `[vp / 16][dp / 2][16]`.
    table_t: LineBuf<u32>,
    /// `table` in pairs along items: `[vp / 2][dp]` (with gradients only).
    table_pairs: LineBuf<u32>,
    /// The chunk's rows of `h` in bf16, `[rows rounded to GROUP][dp]`.
    h: LineBuf<u16>,
    /// The finished logits in bf16, two rows in each word: `[rows / 2][vp]`,
    /// or for AMX in tiles of 16 items, `[vp / 16][rows / 2][16]` (with
    /// gradients; only the chunk's rows and columns are read).
    z_pairs: LineBuf<u32>,
    /// `bf16(z[row, slice]) @ table[slice]`: `[rows][slices][dp]` (see
    /// [`Slices`]), summed in place in the frame of its last block's shift.
    dh_part: LineBuf<f32>,
    /// AMX: the products' part of `dtable`, transposed (`[dp][vp]`, the
    /// tiles' layout), summed over the chunks and added by `finish`.
    dtable_t: LineBuf<f32>,
}

impl Drop for Bf16OutputLayer {
    fn drop(&mut self) {
        if self.with_grad
            && let Ok(mut kept) = CHUNK_BUFFERS.lock()
        {
            *kept = Some(ChunkBuffers {
                z_pairs: std::mem::take(&mut self.z_pairs),
                dh_part: std::mem::take(&mut self.dh_part),
            });
        }
    }
}

impl Bf16OutputLayer {
    /// Packs `table` `[vocab, dim]` for `kernel`, which must be supported.
    pub(crate) fn new(
        kernel: Bf16Kernel,
        table: &[f32],
        dim: usize,
        vocab: usize,
        with_grad: bool,
    ) -> Self {
        assert!(
            kernel.supported(),
            "{}",
            Bf16Unsupported {
                kernel: Some(kernel)
            }
        );
        assert_eq!(table.len(), vocab * dim, "bf16: table is not [vocab, dim]");
        let dp = dim.next_multiple_of(32).max(32);
        let vp = vocab.next_multiple_of(64).max(64);
        // The table in bf16, rows padded to dp: [vp][dp].
        let mut rows = vec![0u16; vp * dp];
        rows.par_chunks_mut(dp)
            .zip(table.par_chunks(dim.max(1)))
            .for_each(|(out, row)| convert(row, &mut out[..dim]));
        let word = |item: usize, d: usize| rows[item * dp + d] as u32;
        let mut table_t = LineBuf::zeroed(vp * dp / 2);
        table_t
            .par_chunks_mut(dp / 2 * 16)
            .enumerate()
            .for_each(|(tile, out)| {
                for (pair, out) in out.chunks_exact_mut(16).enumerate() {
                    for (i, o) in out.iter_mut().enumerate() {
                        let item = tile * 16 + i;
                        *o = word(item, 2 * pair) | word(item, 2 * pair + 1) << 16;
                    }
                }
            });
        let mut table_pairs = LineBuf::zeroed(if with_grad { vp * dp / 2 } else { 0 });
        table_pairs
            .par_chunks_mut(dp)
            .enumerate()
            .for_each(|(pair, out)| {
                for (d, o) in out.iter_mut().enumerate() {
                    *o = word(2 * pair, d) | word(2 * pair + 1, d) << 16;
                }
            });
        let amx_grad = with_grad && kernel == Bf16Kernel::Amx;
        let mut layer = Bf16OutputLayer {
            dtable_t: LineBuf::zeroed(if amx_grad { dp * vp } else { 0 }),
            kernel,
            dim,
            vocab,
            dp,
            vp,
            blocks: vocab.div_ceil(BLOCK_COLS),
            with_grad,
            table_t,
            table_pairs,
            h: LineBuf::default(),
            z_pairs: LineBuf::default(),
            dh_part: LineBuf::default(),
        };
        if with_grad {
            let kept = CHUNK_BUFFERS.lock().map(|mut b| b.take()).unwrap_or(None);
            let kept = kept.unwrap_or_default();
            (layer.z_pairs, layer.dh_part) = (kept.z_pairs, kept.dh_part);
        }
        layer
    }

    /// `z = h @ table^T` for the chunk's `rows` rows of `h` (`[rows, dim]`),
    /// then `finish(row, block, values, floor)` on each row of each block
    /// of [`BLOCK_COLS`] columns, which may rewrite them (the softmax's
    /// exp), its result going to `out[row * blocks + block]`. With
    /// gradients, keeps what [`Bf16OutputLayer::backward`] needs of the
    /// finished values.
    ///
    /// `finish` must leave `e^(z - shift)` times a factor common to the row
    /// (any function of `z` in the tests), with a shift of at least `floor`
    /// that it reports ([`BlockShift`]). The blocks come in slices, each
    /// walked in order by one task that sums `dh` over the slice in place:
    /// `floor` is the shift of the row's previous block in the slice (-inf
    /// for the first), so the shifts grow along a slice and the sum so far
    /// is brought to a new shift by one factor `e^(old - new) <= 1`.
    pub(crate) fn logits<T: Send + BlockShift>(
        &mut self,
        rows: usize,
        h: &[f32],
        out: &mut [T],
        finish: impl Fn(usize, usize, &mut [f32], f32) -> T + Sync,
    ) {
        let (dim, dp, vp, blocks) = (self.dim, self.dp, self.vp, self.blocks);
        assert_eq!(h.len(), rows * dim, "bf16: h is not [rows, dim]");
        assert_eq!(out.len(), rows * blocks, "bf16: out is not [rows, blocks]");
        let padded = rows.next_multiple_of(GROUP);
        // Zeros in the padding: the rows past `rows`, the columns past `dim`.
        self.h.resize(0);
        self.h.resize(padded * dp);
        for (out, row) in self.h.chunks_exact_mut(dp).zip(h.chunks_exact(dim.max(1))) {
            convert(row, &mut out[..dim]);
        }
        // Tasks over parts of rows and slices of blocks; a task walks its
        // slice's blocks in order, summing `dh` over them in place.
        let parts = padded.div_ceil(PART_ROWS);
        let slicing = Slices::new(rows, blocks);
        let slices = slicing.count;
        if self.with_grad {
            // Grown, never shrunk: every value read is written first, and
            // regrowing after a smaller last chunk would zero tens of MiB.
            grow(&mut self.z_pairs, padded / 2 * vp);
            grow(&mut self.dh_part, padded * slices * dp);
        }
        let out = SharedMut(out.as_mut_ptr());
        let z_pairs = SharedMut(self.z_pairs.as_mut_ptr());
        let dh_part = SharedMut(self.dh_part.as_mut_ptr());
        let this = &*self;
        (0..slices * parts).into_par_iter().for_each(|task| {
            let (slice, part) = (task % slices, task / slices);
            let slice_blocks = slicing.blocks(slice);
            SCRATCH.with(|s| {
                let s = &mut *s.borrow_mut();
                s.z.resize(GROUP * BLOCK_COLS);
                s.z_bf16.resize(GROUP * BLOCK_COLS);
                let _tiles = this.tiles();
                let part_rows = part * PART_ROWS..((part + 1) * PART_ROWS).min(padded);
                // The shift of each row's last block in this slice.
                let mut floor = [f32::NEG_INFINITY; PART_ROWS];
                for block in slice_blocks.clone() {
                    let first = block * BLOCK_COLS;
                    let cols = BLOCK_COLS.min(this.vocab - first);
                    let cols_padded = cols.next_multiple_of(32);
                    for r0 in part_rows.clone().step_by(GROUP) {
                        // SAFETY: the rows lie inside `h`, the columns inside
                        // the packed table, and `s.z` holds GROUP x BLOCK_COLS.
                        unsafe { this.logits_group(r0, first, cols_padded, &mut s.z) };
                        for r in r0..(r0 + GROUP).min(rows) {
                            let values = &mut s.z[(r - r0) * BLOCK_COLS..][..cols];
                            let old = &mut floor[r - part_rows.start];
                            let stats = finish(r, block, values, *old);
                            let new = stats.shift();
                            debug_assert!(
                                new >= *old || new.is_nan(),
                                "bf16: a shift below its floor"
                            );
                            if new > *old {
                                if this.with_grad && block != slice_blocks.start {
                                    // The row's sum so far, to the new shift.
                                    // SAFETY: row r of this slice of
                                    // `dh_part`, this task's.
                                    let sum = unsafe {
                                        std::slice::from_raw_parts_mut(
                                            dh_part.offset((r * slices + slice) * dp).0,
                                            dp,
                                        )
                                    };
                                    let factor = (*old - new).exp();
                                    sum.iter_mut().for_each(|x| *x *= factor);
                                }
                                *old = new;
                            }
                            // SAFETY: this task alone has this (row, block).
                            unsafe { *out.offset(r * blocks + block).0 = stats };
                        }
                        if !this.with_grad {
                            continue;
                        }
                        // bf16(z) twice in one pass: row by row for `dh`
                        // (`s.z_bf16`), and in pairs of rows for `dtable`
                        // (`z_pairs`). AMX reads the latter in tiles of 16
                        // items, `[vp / 16][pairs][16]` (16 pairs of a tile are
                        // 1 KiB in a row); AVX512-BF16 as rows of pairs,
                        // `[pairs][vp]`.
                        let pairs = padded / 2;
                        let (at, pair_stride, piece_stride) = match this.kernel {
                            Bf16Kernel::Amx => ((first / 16 * pairs + r0 / 2) * 16, 16, pairs * 16),
                            Bf16Kernel::Avx512Bf16 => (r0 / 2 * vp + first, vp, 16),
                        };
                        let split = SplitPairs {
                            z: &s.z,
                            valid_rows: rows.saturating_sub(r0).min(GROUP),
                            cols,
                            cols_padded,
                            z_bf16: &mut s.z_bf16,
                            pairs: z_pairs.offset(at),
                            pair_stride,
                            piece_stride,
                        };
                        // SAFETY: the group's pairs and this task's columns
                        // of `z_pairs`, inside it in both layouts.
                        unsafe { split_pairs(split) };
                        let dh = DhTarget {
                            slice,
                            slices,
                            accumulate: block != slice_blocks.start,
                        };
                        // SAFETY: rows r0.. of `dh_part`, this slice: this task's.
                        unsafe { this.dh_group(r0, block, cols_padded, &s.z_bf16, dh_part, dh) };
                    }
                }
            });
        });
    }

    /// The chunk's gradients from the finished logits: `dh = (scale z) @
    /// table` (`[rows, dim]`, overwritten) and `dtable += (scale z)^T @ h`
    /// (`[vocab, dim]`; with AMX, once [`Bf16OutputLayer::finish`] ran),
    /// `scales` `[rows, blocks]` multiplying every value of a row's block
    /// (less the one-hot part, which the caller adds). A row's scales must
    /// be proportional to `e^shift` of its blocks (as the softmax's are),
    /// since `dh` was summed over each slice at one shift.
    pub(crate) fn backward(
        &mut self,
        rows: usize,
        scales: &[f32],
        h: &[f32],
        dh: &mut [f32],
        dtable: &mut [f32],
    ) {
        let (dim, dp, blocks) = (self.dim, self.dp, self.blocks);
        assert!(self.with_grad, "bf16: backward of a call without gradients");
        assert_eq!(
            scales.len(),
            rows * blocks,
            "bf16: scales are not [rows, blocks]"
        );
        assert_eq!(dh.len(), rows * dim, "bf16: dh is not [rows, dim]");
        assert_eq!(
            dtable.len(),
            self.vocab * dim,
            "bf16: dtable is not [vocab, dim]"
        );
        let slicing = Slices::new(rows, blocks);
        let dh_part = &self.dh_part;
        super::par::for_each_chunk(dh, dim.max(1), |r, out| {
            out.fill(0.0);
            for slice in 0..slicing.count {
                // The slice's sum is in its last block's frame.
                let last = slicing.blocks(slice).end - 1;
                let s = scales[r * blocks + last];
                let part = &dh_part[(r * slicing.count + slice) * dp..][..out.len()];
                out.iter_mut().zip(part).for_each(|(o, &x)| *o += s * x);
            }
        });
        let padded = rows.next_multiple_of(GROUP);
        // AMX: h transposed, [dp][padded], for `scale_h` (the AVX512-BF16
        // layout pairs rows of `h` as they are).
        let mut h_t = Vec::new();
        if self.kernel == Bf16Kernel::Amx {
            h_t.resize(dp * padded, 0.0f32);
            for (r, row) in h.chunks_exact(dim.max(1)).enumerate() {
                for (d, &x) in row.iter().enumerate() {
                    h_t[d * padded + r] = x;
                }
            }
        }
        // A block's scales, one per row (0 for the padding rows).
        let block_scale = |block: usize| -> Vec<f32> {
            (0..padded)
                .map(|r| {
                    if r < rows {
                        scales[r * blocks + block]
                    } else {
                        0.0
                    }
                })
                .collect()
        };
        // Rows with the same scale for every block (all of them with the
        // shift 0 of bounded logits) need `bf16(scale h)` once per chunk,
        // not once per block.
        let shared = scales
            .chunks_exact(blocks)
            .all(|row| row.iter().all(|&s| s == row[0]))
            .then(|| {
                let mut hs = ScaledH::default();
                self.scale_h(padded, &block_scale(0), h, &h_t, &mut hs);
                hs
            });
        let dtable_ptr = SharedMut(dtable.as_mut_ptr());
        let dtable_t = SharedMut(self.dtable_t.as_mut_ptr());
        let this = &*self;
        (0..blocks).into_par_iter().for_each(|block| {
            let first = block * BLOCK_COLS;
            let cols = BLOCK_COLS.min(this.vocab - first);
            SCRATCH.with(|s| {
                let s = &mut *s.borrow_mut();
                let hs = match &shared {
                    Some(hs) => hs,
                    None => {
                        this.scale_h(padded, &block_scale(block), h, &h_t, &mut s.h_scaled);
                        &s.h_scaled
                    }
                };
                let _tiles = this.tiles();
                // SAFETY (both): the block lies inside the packed operands;
                // its rows of `dtable` (columns of `dtable_t`) are this task's.
                #[cfg(target_arch = "x86_64")]
                match this.kernel {
                    Bf16Kernel::Amx => unsafe {
                        this.dtable_block_amx(padded, first, cols, &hs.t, dtable_t)
                    },
                    Bf16Kernel::Avx512Bf16 => unsafe {
                        let dtable = std::slice::from_raw_parts_mut(
                            dtable_ptr.offset(first * dim).0,
                            cols * dim,
                        );
                        this.dtable_block_avx512(padded, first, cols, &hs.pairs, dtable)
                    },
                }
                #[cfg(not(target_arch = "x86_64"))]
                {
                    let _ = (hs, dtable_ptr, dtable_t, first, cols);
                    unreachable!("bf16 kernels are x86-64 only")
                }
            });
        });
    }

    /// `bf16(scale h)` over `rows` rows (a multiple of GROUP; `scale` 0
    /// past `h`'s rows) in the layout of this layer's kernel; `h_t` is `h`
    /// transposed, `[dp][rows]` (read by AMX only).
    fn scale_h(&self, rows: usize, scale: &[f32], h: &[f32], h_t: &[f32], out: &mut ScaledH) {
        let (dim, dp) = (self.dim, self.dp);
        match self.kernel {
            Bf16Kernel::Amx => {
                out.t.resize(dp * rows);
                for (out, row) in out.t.chunks_exact_mut(rows).zip(h_t.chunks_exact(rows)) {
                    convert_product(row, scale, out);
                }
            }
            Bf16Kernel::Avx512Bf16 => {
                out.pairs.resize(rows / 2 * dp);
                let zeros = vec![0.0f32; dim];
                let row = |r: usize| {
                    if r * dim < h.len() {
                        &h[r * dim..][..dim]
                    } else {
                        &zeros[..]
                    }
                };
                for (p, out) in out.pairs.chunks_exact_mut(dp).enumerate() {
                    let (lo, hi) = (2 * p, 2 * p + 1);
                    pair_rows(row(lo), scale[lo], row(hi), scale[hi], &mut out[..dim]);
                }
            }
        }
    }

    /// With AMX: adds the products' part of `dtable` that
    /// [`Bf16OutputLayer::backward`] summed over the chunks (transposed, as
    /// the tiles make it) to `dtable` `[vocab, dim]`. Call it once, after
    /// the last chunk.
    pub(crate) fn finish(&mut self, dtable: &mut [f32]) {
        if self.dtable_t.is_empty() {
            return;
        }
        let (dim, vp) = (self.dim, self.vp);
        let dtable_t = &self.dtable_t;
        // Items in blocks of 64: each row of `dtable_t` is read 256 bytes at a time.
        super::par::for_each_chunk(dtable, 64 * dim.max(1), |b, out| {
            for (i, row) in out.chunks_exact_mut(dim.max(1)).enumerate() {
                let item = b * 64 + i;
                for (d, o) in row.iter_mut().enumerate() {
                    *o += dtable_t[d * vp + item];
                }
            }
        });
    }

    /// With the AMX kernel, loads the tile configuration on this thread
    /// while the guard lives.
    #[cfg(target_arch = "x86_64")]
    fn tiles(&self) -> Option<amx::TileGuard> {
        // SAFETY: `new` checked that the kernel is supported.
        (self.kernel == Bf16Kernel::Amx).then(|| unsafe { amx::TileGuard::load() })
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn tiles(&self) -> Option<()> {
        None
    }

    /// `z[GROUP][BLOCK_COLS] = h[r0..r0 + GROUP] @ table^T[:, first..first + cols]`
    /// (`cols` a multiple of 32; columns past it are left as they were).
    ///
    /// # Safety
    /// The rows and columns must lie inside the packed operands.
    unsafe fn logits_group(&self, r0: usize, first: usize, cols: usize, z: &mut [f32]) {
        let dp = self.dp;
        let h = self.h[r0 * dp..].as_ptr();
        let table = self.table_t[first * dp / 2..].as_ptr();
        match self.kernel {
            #[cfg(target_arch = "x86_64")]
            Bf16Kernel::Amx => {
                for n in (0..cols).step_by(32) {
                    let block = amx::Block {
                        k_steps: dp / 32,
                        a: h.cast(),
                        a_stride: dp * 2,
                        b: table.wrapping_add(n * dp / 2).cast(),
                        b_stride: 64,
                        b_step: 16 * 64,
                        b_next: dp / 2 * 64,
                        c: z[n..].as_mut_ptr().cast(),
                        c_stride: BLOCK_COLS * 4,
                        accumulate: false,
                    };
                    // SAFETY: the caller's promise; the guard loaded the tiles.
                    unsafe { amx::block(&block) };
                }
            }
            #[cfg(target_arch = "x86_64")]
            Bf16Kernel::Avx512Bf16 => {
                for i in (0..GROUP).step_by(6) {
                    for n in (0..cols).step_by(64) {
                        let tile = x86::DpTile {
                            k: dp / 2,
                            a: h.wrapping_add(i * dp).cast(),
                            rsa: dp / 2,
                            csa: 1,
                            mr: 6.min(GROUP - i),
                            b: table.wrapping_add(n * dp / 2),
                            rsb: 16,
                            vstride: dp / 2 * 16,
                            nr: 64,
                            c: z[i * BLOCK_COLS + n..].as_mut_ptr(),
                            ldc: BLOCK_COLS,
                            accumulate: false,
                        };
                        // SAFETY: the caller's promise; `vp` is a multiple
                        // of 64, so four item tiles always exist.
                        unsafe { x86::dp_tile(&tile) };
                    }
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => unreachable!("bf16 kernels are x86-64 only"),
        }
    }

    /// `dh_part[r0..r0 + GROUP, slice] (+)= z_bf16 @ table[first..first +
    /// cols]` (all `dp` columns) for the block's columns.
    ///
    /// # Safety
    /// As [`Bf16OutputLayer::logits_group`]; `dh_part` must be this
    /// group's and slice's to write.
    unsafe fn dh_group(
        &self,
        r0: usize,
        block: usize,
        cols: usize,
        z: &[u16],
        dh_part: SharedMut,
        target: DhTarget,
    ) {
        let (dp, slices) = (self.dp, target.slices);
        let table = self.table_pairs[block * BLOCK_COLS / 2 * dp..].as_ptr();
        let out = dh_part.offset((r0 * slices + target.slice) * dp).0;
        match self.kernel {
            #[cfg(target_arch = "x86_64")]
            Bf16Kernel::Amx => {
                for d in (0..dp).step_by(32) {
                    let block = amx::Block {
                        k_steps: cols / 32,
                        a: z.as_ptr().cast(),
                        a_stride: BLOCK_COLS * 2,
                        b: table.wrapping_add(d).cast(),
                        b_stride: dp * 4,
                        b_step: 16 * dp * 4,
                        b_next: 64,
                        c: out.wrapping_add(d).cast(),
                        c_stride: slices * dp * 4,
                        accumulate: target.accumulate,
                    };
                    // SAFETY: the caller's promise; the guard loaded the tiles.
                    unsafe { amx::block(&block) };
                }
            }
            #[cfg(target_arch = "x86_64")]
            Bf16Kernel::Avx512Bf16 => {
                for i in (0..GROUP).step_by(6) {
                    for d in (0..dp).step_by(64) {
                        let tile = x86::DpTile {
                            k: cols / 2,
                            a: z[i * BLOCK_COLS..].as_ptr().cast(),
                            rsa: BLOCK_COLS / 2,
                            csa: 1,
                            mr: 6.min(GROUP - i),
                            b: table.wrapping_add(d),
                            rsb: dp,
                            vstride: 16,
                            nr: 64.min(dp - d),
                            c: out.wrapping_add(i * slices * dp + d),
                            ldc: slices * dp,
                            accumulate: target.accumulate,
                        };
                        // SAFETY: the caller's promise.
                        unsafe { x86::dp_tile(&tile) };
                    }
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => unreachable!("bf16 kernels are x86-64 only"),
        }
    }

    /// AMX: `dtable_t[:, first..first + cols] += hs @ z_pairs[:, block]`
    /// over `rows` rows (a multiple of GROUP, the last ones zero), `hs` =
    /// `bf16(scale h)^T` (`[dp][rows]`, [`ScaledH::t`]).
    ///
    /// # Safety
    /// The block must lie inside the packed operands, and its columns of
    /// `dtable_t` must be this task's to write; a tile guard must live.
    #[cfg(target_arch = "x86_64")]
    unsafe fn dtable_block_amx(
        &self,
        rows: usize,
        first: usize,
        cols: usize,
        hs: &[u16],
        dtable_t: SharedMut,
    ) {
        let (dp, vp, pairs) = (self.dp, self.vp, rows / 2);
        let z = self.z_pairs[first * pairs..].as_ptr();
        for n in (0..cols).step_by(32) {
            for d in (0..dp).step_by(32) {
                let block = amx::Block {
                    k_steps: rows / 32,
                    a: hs[d * rows..].as_ptr().cast(),
                    a_stride: rows * 2,
                    b: z.wrapping_add(n * pairs).cast(),
                    b_stride: 64,
                    b_step: 16 * 64,
                    b_next: pairs * 64,
                    c: dtable_t.offset(d * vp + first + n).0.cast(),
                    c_stride: vp * 4,
                    accumulate: true,
                };
                // SAFETY: the caller's promise.
                unsafe { amx::block(&block) };
            }
        }
    }

    /// AVX512-BF16: `dtable[first..first + cols] += z_pairs[:, block]^T @
    /// hs` over `rows` rows (a multiple of GROUP, the last ones zero), `hs`
    /// = `bf16(scale h)` in pairs of rows (`[rows / 2][dp]`,
    /// [`ScaledH::pairs`]); `dtable` holds the block's rows.
    ///
    /// # Safety
    /// The block must lie inside the packed operands.
    #[cfg(target_arch = "x86_64")]
    unsafe fn dtable_block_avx512(
        &self,
        rows: usize,
        first: usize,
        cols: usize,
        hs: &[u32],
        dtable: &mut [f32],
    ) {
        let (dim, dp, vp) = (self.dim, self.dp, self.vp);
        let z = self.z_pairs[first..].as_ptr();
        for i in (0..cols).step_by(6) {
            for d in (0..dim).step_by(64) {
                let tile = x86::DpTile {
                    k: rows / 2,
                    a: z.wrapping_add(i),
                    rsa: 1,
                    csa: vp,
                    mr: 6.min(cols - i),
                    b: hs[d..].as_ptr(),
                    rsb: dp,
                    vstride: 16,
                    nr: 64.min(dim - d),
                    c: dtable[i * dim + d..].as_mut_ptr(),
                    ldc: dim,
                    accumulate: true,
                };
                // SAFETY: the caller's promise; B reads stay inside `dp`,
                // a multiple of 32 (see `dp_tile`).
                unsafe { x86::dp_tile(&tile) };
            }
        }
    }
}

/// Makes `buf` at least `len` long.
fn grow<T: bytemuck::Pod>(buf: &mut LineBuf<T>, len: usize) {
    if buf.len() < len {
        buf.resize(len);
    }
}

// The conversions below run only inside a `Bf16OutputLayer`, whose `new`
// checked that the CPU has AVX512-BF16 (both kernels need it).

/// `dst[i] = bf16(src[i])`.
fn convert(src: &[f32], dst: &mut [u16]) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the CPU has AVX512-BF16 (see above).
    unsafe {
        x86::convert(src, None, dst)
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("bf16 kernels are x86-64 only: {src:?} {dst:?}")
}

/// `dst[i] = bf16(a[i] * b[i])`.
fn convert_product(a: &[f32], b: &[f32], dst: &mut [u16]) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the CPU has AVX512-BF16 (see above).
    unsafe {
        x86::convert(a, Some(b), dst)
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("bf16 kernels are x86-64 only: {a:?} {b:?} {dst:?}")
}

/// A group's block of logits `z` (`[GROUP][BLOCK_COLS]` f32, the first
/// `cols_padded` columns, a multiple of 16, read; columns from `cols` and
/// rows from `valid_rows` read as 0) to bf16: row by row into `z_bf16`
/// (`[GROUP][BLOCK_COLS]`), and in pairs of rows, `bf16(z[2p][i]) | bf16(z[2p +
/// 1][i]) << 16`, 16 columns at a time: the `t`-th 16 of pair `p` to
/// `pairs + p * pair_stride + t * piece_stride`.
struct SplitPairs<'a> {
    z: &'a [f32],
    valid_rows: usize,
    cols: usize,
    cols_padded: usize,
    z_bf16: &'a mut [u16],
    pairs: SharedMut<u32>,
    pair_stride: usize,
    piece_stride: usize,
}

/// # Safety
/// Each piece of `pairs` must be writable.
unsafe fn split_pairs(s: SplitPairs) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the CPU has AVX512-BF16 (see above); the pieces, the caller's.
    unsafe {
        x86::split_pairs(s)
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("bf16 kernels are x86-64 only: {:?}", s.z)
}

/// `dst[i] = bf16(s_lo lo[i]) | bf16(s_hi hi[i]) << 16`.
fn pair_rows(lo: &[f32], s_lo: f32, hi: &[f32], s_hi: f32, dst: &mut [u32]) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the CPU has AVX512-BF16 (see above).
    unsafe {
        x86::pair_rows(lo, s_lo, hi, s_hi, dst)
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("bf16 kernels are x86-64 only: {lo:?} {s_lo} {hi:?} {s_hi} {dst:?}")
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The AVX512-BF16 microkernel and the conversions.

    use std::arch::x86_64::*;

    use super::bf16_bits;

    /// `dst[i] = bf16(src[i])`, or `bf16(src[i] * times[i])`; 16 at a time
    /// (`vcvtneps2bf16`), the tail by [`bf16_bits`], which rounds the same.
    ///
    /// # Safety
    /// The CPU must support AVX512-BF16.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn convert(src: &[f32], times: Option<&[f32]>, dst: &mut [u16]) {
        assert_eq!(src.len(), dst.len(), "bf16: convert lengths differ");
        if let Some(t) = times {
            assert_eq!(t.len(), src.len(), "bf16: convert lengths differ");
        }
        let n = src.len();
        let full = n / 16 * 16;
        for i in (0..full).step_by(16) {
            // SAFETY: i + 16 <= n for every slice.
            unsafe {
                let mut v = _mm512_loadu_ps(src.as_ptr().add(i));
                if let Some(t) = times {
                    v = _mm512_mul_ps(v, _mm512_loadu_ps(t.as_ptr().add(i)));
                }
                let b: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(v));
                _mm256_storeu_si256(dst.as_mut_ptr().add(i).cast(), b);
            }
        }
        for i in full..n {
            dst[i] = bf16_bits(src[i] * times.map_or(1.0, |t| t[i]));
        }
    }

    /// The word order that turns `_mm512_cvtne2ps_pbh(hi, lo)` (lo's 16
    /// bf16, then hi's) into 16 pairs `lo[i] | hi[i] << 16`: word 2i takes
    /// word i, word 2i + 1 takes word 16 + i.
    #[target_feature(enable = "avx512f")]
    fn pair_order() -> __m512i {
        let order: [i16; 32] = std::array::from_fn(|w| (w / 2 + 16 * (w % 2)) as i16);
        // SAFETY: `order` is 64 bytes.
        unsafe { _mm512_loadu_si512(order.as_ptr().cast()) }
    }

    /// `dst[i] = bf16(s_lo lo[i]) | bf16(s_hi hi[i]) << 16`, 16 at a time.
    ///
    /// # Safety
    /// The CPU must support AVX512-BF16 (and BW).
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) unsafe fn pair_rows(lo: &[f32], s_lo: f32, hi: &[f32], s_hi: f32, dst: &mut [u32]) {
        let n = dst.len();
        assert!(
            lo.len() == n && hi.len() == n,
            "bf16: pair_rows lengths differ"
        );
        let order = pair_order();
        let (s_lo_v, s_hi_v) = (_mm512_set1_ps(s_lo), _mm512_set1_ps(s_hi));
        let full = n / 16 * 16;
        for i in (0..full).step_by(16) {
            // SAFETY: i + 16 <= n for every slice.
            unsafe {
                let a = _mm512_mul_ps(s_lo_v, _mm512_loadu_ps(lo.as_ptr().add(i)));
                let b = _mm512_mul_ps(s_hi_v, _mm512_loadu_ps(hi.as_ptr().add(i)));
                let both: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(b, a));
                let pairs = _mm512_permutexvar_epi16(order, both);
                _mm512_storeu_si512(dst.as_mut_ptr().add(i).cast(), pairs);
            }
        }
        for i in full..n {
            dst[i] = bf16_bits(s_lo * lo[i]) as u32 | (bf16_bits(s_hi * hi[i]) as u32) << 16;
        }
    }

    /// See [`super::SplitPairs`]: one `vcvtne2ps2bf16` gives two rows'
    /// bf16 of 16 columns, stored as they are (row by row) and permuted
    /// into pairs. The inner loop runs along the smaller of the two
    /// strides, so that the pairs' stores run in a row: 64 stores a page
    /// apart cost more than the conversions.
    ///
    /// # Safety
    /// The CPU must support AVX512-BF16 (and BW); each piece of `s.pairs`
    /// must be writable and 64-byte aligned.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) unsafe fn split_pairs(s: super::SplitPairs) {
        use super::{BLOCK_COLS, GROUP};
        assert!(
            s.cols_padded.is_multiple_of(16)
                && s.cols <= s.cols_padded
                && s.cols_padded <= BLOCK_COLS
                && s.z.len() >= GROUP * BLOCK_COLS
                && s.z_bf16.len() >= GROUP * BLOCK_COLS,
            "bf16: split_pairs sizes"
        );
        let order = pair_order();
        let (z, zb) = (s.z.as_ptr(), s.z_bf16.as_mut_ptr());
        let one = |p: usize, t: usize| {
            let (lo, hi, i) = (2 * p, 2 * p + 1, 16 * t);
            // The lanes of row r's columns i..i + 16 that hold values.
            let mask = |r: usize| -> __mmask16 {
                let lanes = if r < s.valid_rows {
                    s.cols.saturating_sub(i).min(16)
                } else {
                    0
                };
                ((1u32 << lanes) - 1) as __mmask16
            };
            // SAFETY: rows below GROUP, columns below BLOCK_COLS (asserted); the
            // piece is the caller's.
            unsafe {
                let lo_v = _mm512_maskz_loadu_ps(mask(lo), z.add(lo * BLOCK_COLS + i));
                let hi_v = _mm512_maskz_loadu_ps(mask(hi), z.add(hi * BLOCK_COLS + i));
                // Words 0-15: lo's bf16, words 16-31: hi's.
                let both: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi_v, lo_v));
                _mm256_storeu_si256(
                    zb.add(lo * BLOCK_COLS + i).cast(),
                    _mm512_castsi512_si256(both),
                );
                _mm256_storeu_si256(
                    zb.add(hi * BLOCK_COLS + i).cast(),
                    _mm512_extracti64x4_epi64::<1>(both),
                );
                let pairs = _mm512_permutexvar_epi16(order, both);
                let at = p * s.pair_stride + t * s.piece_stride;
                _mm512_stream_si512(s.pairs.offset(at).0.cast(), pairs);
            }
        };
        let pieces = s.cols_padded / 16;
        if s.pair_stride < s.piece_stride {
            for t in 0..pieces {
                (0..GROUP / 2).for_each(|p| one(p, t));
            }
        } else {
            for p in 0..GROUP / 2 {
                (0..pieces).for_each(|t| one(p, t));
            }
        }
        // The streamed stores are weakly ordered: done before the
        // backward's reads.
        _mm_sfence();
    }

    /// One register tile of a product whose operands are bf16 pairs:
    /// `c[m, n] (+)= sum_q dot(a[m, q], b[q, n])` over `k` pairs, for
    /// `m < mr`, `n < nr`. `a[m, q]` is the u32 at `a + m * rsa + q * csa`;
    /// row `q` of `b` is read as 16-wide vectors at `b + q * rsb + v *
    /// vstride`, four of them when `nr > 32`, else two, all readable.
    pub(super) struct DpTile {
        pub k: usize,
        pub a: *const u32,
        pub rsa: usize,
        pub csa: usize,
        pub mr: usize,
        pub b: *const u32,
        pub rsb: usize,
        pub vstride: usize,
        pub nr: usize,
        pub c: *mut f32,
        pub ldc: usize,
        /// `c += ...` instead of `c = ...`.
        pub accumulate: bool,
    }

    /// # Safety
    /// The CPU must support AVX512-BF16, and every address the tile
    /// describes must be readable (`a`, `b`) or writable (`c`, the first
    /// `mr` rows and `nr` columns).
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn dp_tile(t: &DpTile) {
        debug_assert!((1..=6).contains(&t.mr) && (1..=64).contains(&t.nr));
        // SAFETY: the caller's promise.
        unsafe {
            if t.nr > 32 {
                tile::<6, 4>(t)
            } else {
                tile::<6, 2>(t)
            }
        }
    }

    #[inline(always)]
    unsafe fn tile<const MR: usize, const NV: usize>(t: &DpTile) {
        // SAFETY (whole body): the addresses lie inside the operands (the
        // caller's promise); rows past `mr` read row 0 and are not stored.
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); NV]; MR];
            let mut rows = [0usize; MR];
            for (r, row) in rows.iter_mut().enumerate() {
                *row = if r < t.mr { r * t.rsa } else { 0 };
            }
            let (mut a, mut b) = (t.a, t.b);
            for _ in 0..t.k {
                let mut bv = [_mm512_setzero_si512(); NV];
                for (v, x) in bv.iter_mut().enumerate() {
                    *x = _mm512_loadu_si512(b.add(v * t.vstride).cast());
                }
                for r in 0..MR {
                    let av: __m512bh =
                        std::mem::transmute(_mm512_set1_epi32(*a.add(rows[r]) as i32));
                    for v in 0..NV {
                        acc[r][v] = _mm512_dpbf16_ps(
                            acc[r][v],
                            av,
                            std::mem::transmute::<__m512i, __m512bh>(bv[v]),
                        );
                    }
                }
                a = a.wrapping_add(t.csa);
                b = b.wrapping_add(t.rsb);
            }
            for (r, acc) in acc.iter().enumerate().take(t.mr) {
                for (v, &x) in acc.iter().enumerate() {
                    let lanes = t.nr.saturating_sub(v * 16).min(16);
                    if lanes == 0 {
                        break;
                    }
                    let p = t.c.add(r * t.ldc + v * 16);
                    let mask = if lanes == 16 {
                        u16::MAX
                    } else {
                        (1u16 << lanes) - 1
                    };
                    let x = if t.accumulate {
                        _mm512_add_ps(_mm512_maskz_loadu_ps(mask, p), x)
                    } else {
                        x
                    };
                    _mm512_mask_storeu_ps(p, mask, x);
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod amx {
    //! AMX through `asm!`: the tile configuration, the permission Linux
    //! asks for, and one kernel.

    use std::arch::asm;
    use std::arch::x86_64::__cpuid_count;
    use std::sync::OnceLock;

    /// Whether the CPU has AMX-BF16 with tiles of at least 16 rows of 64
    /// bytes (palette 1), the OS saves their state, and (Linux) it granted
    /// this process the tile data (asked once).
    pub(super) fn available() -> bool {
        static AVAILABLE: OnceLock<bool> = OnceLock::new();
        *AVAILABLE.get_or_init(|| cpu_has_amx_bf16() && os_grants_tile_data())
    }

    fn cpu_has_amx_bf16() -> bool {
        // SAFETY: cpuid and xgetbv only read processor state; xgetbv runs
        // only where CPUID says the OS enabled XSAVE.
        unsafe {
            if __cpuid_count(0, 0).eax < 0x1d {
                return false;
            }
            // CPUID.(7, 0):EDX[22] AMX-BF16, [24] AMX-TILE.
            let edx = __cpuid_count(7, 0).edx;
            if edx & (1 << 22) == 0 || edx & (1 << 24) == 0 {
                return false;
            }
            // CPUID.1:ECX[27] OSXSAVE; XCR0[17, 18]: XTILECFG, XTILEDATA.
            if __cpuid_count(1, 0).ecx & (1 << 27) == 0 || xcr0() & (0b11 << 17) != 0b11 << 17 {
                return false;
            }
            // Palette 1: EBX = bytes per row | names << 16, ECX = rows.
            let palette = __cpuid_count(0x1d, 1);
            palette.ebx & 0xffff >= 64 && palette.ebx >> 16 >= 8 && palette.ecx & 0xffff >= 16
        }
    }

    #[target_feature(enable = "xsave")]
    fn xcr0() -> u64 {
        // SAFETY: the caller checked OSXSAVE.
        unsafe { std::arch::x86_64::_xgetbv(0) }
    }

    #[cfg(target_os = "linux")]
    fn os_grants_tile_data() -> bool {
        const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
        const XFEATURE_XTILEDATA: libc::c_long = 18;
        // SAFETY: the request only changes which state this process may use.
        unsafe {
            libc::syscall(
                libc::SYS_arch_prctl,
                ARCH_REQ_XCOMP_PERM,
                XFEATURE_XTILEDATA,
            ) == 0
        }
    }

    /// Other systems: not tried (untested here).
    #[cfg(not(target_os = "linux"))]
    fn os_grants_tile_data() -> bool {
        false
    }

    /// The tile configuration: palette 1, all 8 tiles 16 rows of 64 bytes
    /// (tmm0-3: the f32 2 x 2 output; tmm4-5: A; tmm6-7: B).
    #[repr(C, align(64))]
    struct Config([u8; 64]);

    const CONFIG: Config = {
        let mut c = [0u8; 64];
        c[0] = 1;
        let mut t = 0;
        while t < 8 {
            c[16 + 2 * t] = 64;
            c[48 + t] = 16;
            t += 1;
        }
        Config(c)
    };

    /// The tile configuration loaded on this thread; released on drop.
    pub(super) struct TileGuard(());

    impl TileGuard {
        /// # Safety
        /// [`available`] must be true. Nothing else may use the tiles on
        /// this thread while the guard lives.
        pub(super) unsafe fn load() -> TileGuard {
            // SAFETY: the caller's promise; the configuration is valid.
            unsafe {
                asm!("ldtilecfg [{}]", in(reg) CONFIG.0.as_ptr(), options(nostack, readonly))
            };
            TileGuard(())
        }
    }

    impl Drop for TileGuard {
        fn drop(&mut self) {
            // SAFETY: the guard loaded a configuration on this thread.
            unsafe { asm!("tilerelease", options(nostack, nomem)) };
        }
    }

    /// A 32 x 32 f32 block `C (+)= sum over k_steps of A_s @ B_s`: A two
    /// tiles of 16 rows x 32 bf16 (rows `a_stride` bytes apart, the second
    /// tile 16 rows on, the next step 64 bytes on), B two tiles of 16
    /// pairs x 16 columns (rows `b_stride` apart, the second tile `b_next`
    /// bytes on, the next step `b_step` on), C stored as 32 rows of 32 f32
    /// `c_stride` bytes apart (added to what C held with `accumulate`).
    pub(super) struct Block {
        pub k_steps: usize,
        pub a: *const u8,
        pub a_stride: usize,
        pub b: *const u8,
        pub b_stride: usize,
        pub b_step: usize,
        pub b_next: usize,
        pub c: *mut u8,
        pub c_stride: usize,
        pub accumulate: bool,
    }

    /// # Safety
    /// A [`TileGuard`] must live on this thread, `k_steps >= 1`, and every
    /// address the block describes must be readable (A, B) or writable (C).
    pub(super) unsafe fn block(t: &Block) {
        debug_assert!(t.k_steps >= 1);
        let c1 = t.c.wrapping_add(16 * t.c_stride);
        // SAFETY (both): the caller's promise.
        unsafe {
            if t.accumulate {
                asm!(
                    "tileloadd tmm0, [{c0} + {sc}*1]",
                    "tileloadd tmm1, [{c0} + {sc}*1 + 64]",
                    "tileloadd tmm2, [{c1} + {sc}*1]",
                    "tileloadd tmm3, [{c1} + {sc}*1 + 64]",
                    c0 = in(reg) t.c,
                    c1 = in(reg) c1,
                    sc = in(reg) t.c_stride,
                    options(nostack, readonly),
                );
            } else {
                asm!(
                    "tilezero tmm0",
                    "tilezero tmm1",
                    "tilezero tmm2",
                    "tilezero tmm3",
                    options(nostack, nomem)
                );
            }
            asm!(
                "2:",
                // Each product right after its operands' loads, and each
                // operand's last reader early: a tile's next load waits
                // for the products reading it (measured: 7% off the
                // three products against four loads, then four products).
                "tileloadd tmm4, [{a0} + {sa}*1]",
                "tileloadd tmm6, [{b0} + {sb}*1]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tileloadd tmm7, [{b1} + {sb}*1]",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tileloadd tmm5, [{a1} + {sa}*1]",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                "add {a0}, 64",
                "add {a1}, 64",
                "add {b0}, {bstep}",
                "add {b1}, {bstep}",
                "dec {k}",
                "jnz 2b",
                "tilestored [{c0} + {sc}*1], tmm0",
                "tilestored [{c0} + {sc}*1 + 64], tmm1",
                "tilestored [{c1} + {sc}*1], tmm2",
                "tilestored [{c1} + {sc}*1 + 64], tmm3",
                a0 = inout(reg) t.a => _,
                a1 = inout(reg) t.a.wrapping_add(16 * t.a_stride) => _,
                b0 = inout(reg) t.b => _,
                b1 = inout(reg) t.b.wrapping_add(t.b_next) => _,
                k = inout(reg) t.k_steps => _,
                sa = in(reg) t.a_stride,
                sb = in(reg) t.b_stride,
                bstep = in(reg) t.b_step,
                c0 = in(reg) t.c,
                c1 = in(reg) c1,
                sc = in(reg) t.c_stride,
                options(nostack),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Deterministic values in [-scale, scale).
    fn values(n: usize, seed: u32, scale: f32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).max(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                scale * ((s >> 8) as f32 / (1 << 23) as f32 - 1.0)
            })
            .collect()
    }

    /// Each kernel this CPU runs; the others are named as skipped.
    fn kernels(test: &str) -> Vec<Bf16Kernel> {
        Bf16Kernel::ALL
            .into_iter()
            .filter(|&k| {
                let ok = k.supported();
                if !ok {
                    eprintln!(
                        "{test}: skipped the {k} kernel: {}",
                        Bf16Unsupported { kernel: Some(k) }
                    );
                }
                ok
            })
            .collect()
    }

    /// Unit roundoff of bf16 (8 significant bits) and of f32.
    const U_BF16: f64 = 1.0 / 256.0;
    const U_F32: f64 = f32::EPSILON as f64 / 2.0;

    #[test]
    fn scalar_rounding_is_the_cpus() {
        // Ties (both ways), carries into the exponent, overflow to inf,
        // subnormals, NaNs with and without the quiet bit, signs.
        let mut xs: Vec<f32> = [
            0x3f80_8000u32,
            0x3f81_8000,
            0x3f80_8001,
            0x3f80_7fff,
            0x7f7f_ffff,
            0x7f7f_8000,
            0x0080_0000,
            0x007f_ffff,
            0x0000_0001,
            0x8000_0001,
            0x7f80_0001,
            0xff80_0001,
            0x7fc0_0000,
            0x7f80_0000,
            0xff80_0000,
            0x0000_0000,
            0x8000_0000,
            0x3fff_ffff,
        ]
        .map(f32::from_bits)
        .to_vec();
        xs.extend(values(10_000, 1, 100.0));
        xs.extend(values(10_000, 2, 1e-36));
        let expected: Vec<u16> = xs.iter().map(|&x| bf16_bits(x)).collect();
        assert_eq!(bf16_bits(1.0 + 1.0 / 256.0), 0x3f80, "tie to even (down)");
        assert_eq!(
            bf16_bits(f32::from_bits(0x3f81_8000)),
            0x3f82,
            "tie to even (up)"
        );
        assert_eq!(bf16_value(bf16_bits(0.1)), 0.100_097_656);
        let Some(_) = kernels("scalar_rounding_is_the_cpus").first() else {
            return;
        };
        let mut got = vec![0u16; xs.len()];
        // Whole vectors go through `vcvtneps2bf16` (the tail is scalar).
        convert(&xs, &mut got);
        for (i, (&x, (&g, &e))) in xs.iter().zip(got.iter().zip(&expected)).enumerate() {
            assert_eq!(g, e, "value {i}: {x:e} ({:#010x})", x.to_bits());
        }
        let (lo, hi) = xs.split_at(xs.len() / 2);
        let mut pairs = vec![0u32; lo.len()];
        pair_rows(lo, 1.0, &hi[..lo.len()], 1.0, &mut pairs);
        for (i, &p) in pairs.iter().enumerate() {
            assert_eq!(p as u16, bf16_bits(lo[i]), "pair {i} (low)");
            assert_eq!((p >> 16) as u16, bf16_bits(hi[i]), "pair {i} (high)");
        }
    }

    /// What one call of the products gives: the logits the kernel made
    /// (before `finish`), `finish`'s results, the floors the layer gave
    /// it, the scales the backward took, `dh` and `dtable`.
    struct Products {
        z: Vec<f32>,
        finished: Vec<Finished>,
        floors: Vec<f32>,
        scales: Vec<f32>,
        dh: Vec<f32>,
        dtable: Vec<f32>,
    }

    /// The test's `finish` of a block: `f = z e^-shift / 2` with `shift`
    /// the larger of the floor and the block's maximum, and the sum of `f`.
    #[derive(Clone, Copy, Debug)]
    struct Finished {
        sum: f32,
        shift: f32,
    }

    impl BlockShift for Finished {
        fn shift(&self) -> f32 {
            self.shift
        }
    }

    /// The factor [`Finished`]'s `finish` puts on a block's logits.
    fn finish_factor(shift: f32) -> f32 {
        0.5 * (-shift).exp()
    }

    /// The three products of one chunk on `kernel`: `finish` shifts each
    /// block as the softmax would, and the backward's scales are
    /// `row_factors[r] e^shift` (as the softmax's are), so the backward
    /// products must use the finished values and undo the shifts.
    fn run(
        kernel: Bf16Kernel,
        (rows, dim, vocab): (usize, usize, usize),
        h: &[f32],
        table: &[f32],
        row_factors: &[f32],
        dtable_old: &[f32],
    ) -> Products {
        let blocks = vocab.div_ceil(BLOCK_COLS);
        let mut layer = Bf16OutputLayer::new(kernel, table, dim, vocab, true);
        let z = Mutex::new(vec![f32::NAN; rows * vocab]);
        let floors = Mutex::new(vec![f32::NAN; rows * blocks]);
        let mut finished = vec![
            Finished {
                sum: 0.0,
                shift: 0.0
            };
            rows * blocks
        ];
        layer.logits(rows, h, &mut finished, |r, b, values, floor| {
            z.lock().unwrap()[r * vocab + b * BLOCK_COLS..][..values.len()].copy_from_slice(values);
            floors.lock().unwrap()[r * blocks + b] = floor;
            let shift = values.iter().fold(floor, |m, &v| m.max(v));
            let factor = finish_factor(shift);
            values.iter_mut().for_each(|v| *v *= factor);
            Finished {
                sum: values.iter().sum(),
                shift,
            }
        });
        let scales: Vec<f32> = finished
            .iter()
            .enumerate()
            .map(|(i, f)| row_factors[i / blocks] * f.shift.exp())
            .collect();
        let (mut dh, mut dtable) = (vec![f32::NAN; rows * dim], dtable_old.to_vec());
        layer.backward(rows, &scales, h, &mut dh, &mut dtable);
        layer.finish(&mut dtable);
        Products {
            z: z.into_inner().unwrap(),
            finished,
            floors: floors.into_inner().unwrap(),
            scales,
            dh,
            dtable,
        }
    }

    /// The value bf16 rounding gives `x`.
    fn rounded(x: f32) -> f64 {
        bf16_value(bf16_bits(x)) as f64
    }

    /// Checks a product's result element by element twice: against the
    /// exact sum of the products of the bf16-rounded operands (`terms_bf16`,
    /// off only by f32 sums of `k` terms: a wrong layout or a lost term
    /// fails here), and against the exact sum of the unrounded products
    /// (`terms`, within the bf16 bound: two roundings per product).
    fn check_product(
        what: &str,
        got: &[f32],
        k: usize,
        terms: impl Fn(usize) -> Vec<f64>,
        terms_bf16: impl Fn(usize) -> Vec<f64>,
        old: impl Fn(usize) -> f64,
    ) {
        for (i, &g) in got.iter().enumerate() {
            let g = g as f64;
            let (t, tb, old) = (terms(i), terms_bf16(i), old(i));
            let sum = |t: &[f64]| t.iter().sum::<f64>() + old;
            let abs = |t: &[f64]| t.iter().map(|x| x.abs()).sum::<f64>();
            let sums = 1.01 * (k + 2) as f64 * U_F32;
            let tight = sums * abs(&tb) + U_F32 * sum(&tb).abs() + 1e-30;
            assert!(
                (g - sum(&tb)).abs() <= tight,
                "{what}[{i}] = {g}, exact for bf16 operands {}, bound {tight}",
                sum(&tb)
            );
            let loose =
                (2.0 * U_BF16 + U_BF16 * U_BF16 + sums) * abs(&t) + U_F32 * sum(&t).abs() + 1e-30;
            assert!(
                (g - sum(&t)).abs() <= loose,
                "{what}[{i}] = {g}, exact {}, bound {loose}",
                sum(&t)
            );
        }
    }

    #[test]
    fn every_kernel_is_within_the_bf16_bound_of_the_f32_products() {
        // Odd sizes: rows not a multiple of 32 (nor even), dim not a
        // multiple of 32, three blocks of BLOCK_COLS columns, the last
        // partial; and 41 blocks, which go in slices of 2 (the last short),
        // `dh` summed over each in place.
        for (rows, dim, vocab) in [
            (37, 40, 2 * BLOCK_COLS + 77),
            (5, 64, 100),
            (64, 96, BLOCK_COLS),
            (1, 3, 33),
            (37, 40, 40 * BLOCK_COLS + 77),
        ] {
            let blocks = vocab.div_ceil(BLOCK_COLS);
            let (h, table) = (values(rows * dim, 1, 1.0), values(vocab * dim, 2, 1.0));
            let row_factors: Vec<f32> = values(rows, 3, 1.0).iter().map(|s| 1.5 + s).collect();
            let dtable_old = values(vocab * dim, 4, 1.0);
            for kernel in kernels("every_kernel_is_within_the_bf16_bound_of_the_f32_products") {
                let what = |name: &str| format!("{kernel} {rows}x{dim}x{vocab}: {name}");
                let sizes = (rows, dim, vocab);
                let p = run(kernel, sizes, &h, &table, &row_factors, &dtable_old);
                let (hv, tv) = (
                    |r: usize, d: usize| h[r * dim + d],
                    |j: usize, d: usize| table[j * dim + d],
                );
                check_product(
                    &what("logits"),
                    &p.z,
                    dim,
                    |i| {
                        (0..dim)
                            .map(|d| hv(i / vocab, d) as f64 * tv(i % vocab, d) as f64)
                            .collect()
                    },
                    |i| {
                        (0..dim)
                            .map(|d| rounded(hv(i / vocab, d)) * rounded(tv(i % vocab, d)))
                            .collect()
                    },
                    |_| 0.0,
                );
                // `finish` ran once per row and block, on the kernel's
                // values, its floor -inf or the shift of the row's block
                // before (past the first block of a slice).
                let mut floored = 0;
                for r in 0..rows {
                    for b in 0..blocks {
                        let block = &p.z[r * vocab + b * BLOCK_COLS..]
                            [..BLOCK_COLS.min(vocab - b * BLOCK_COLS)];
                        let done = p.finished[r * blocks + b];
                        let factor = finish_factor(done.shift);
                        let sum: f32 = block.iter().map(|v| v * factor).sum();
                        assert_eq!(done.sum, sum, "{}", what("finish"));
                        let floor = p.floors[r * blocks + b];
                        if floor != f32::NEG_INFINITY {
                            assert_eq!(floor, p.finished[r * blocks + b - 1].shift);
                            floored += 1;
                        }
                    }
                }
                if blocks > LOGITS_TASKS {
                    assert!(floored > 0, "{}", what("no slice of several blocks"));
                }
                // dh and dtable take the finished values f, each row's
                // block scaled by s (dtable: s h rounded to bf16).
                let f = |r: usize, j: usize| {
                    p.z[r * vocab + j]
                        * finish_factor(p.finished[r * blocks + j / BLOCK_COLS].shift)
                };
                let s = |r: usize, j: usize| p.scales[r * blocks + j / BLOCK_COLS];
                // The sum along a row, in slices, then over the slices;
                // each slice brought to one shift by a factor (2 roundings).
                check_product(
                    &what("dh"),
                    &p.dh,
                    vocab.next_multiple_of(32) + 2 * blocks,
                    |i| {
                        let (r, d) = (i / dim, i % dim);
                        (0..vocab)
                            .map(|j| s(r, j) as f64 * f(r, j) as f64 * tv(j, d) as f64)
                            .collect()
                    },
                    |i| {
                        let (r, d) = (i / dim, i % dim);
                        (0..vocab)
                            .map(|j| s(r, j) as f64 * rounded(f(r, j)) * rounded(tv(j, d)))
                            .collect()
                    },
                    |_| 0.0,
                );
                check_product(
                    &what("dtable"),
                    &p.dtable,
                    rows,
                    |i| {
                        let (j, d) = (i / dim, i % dim);
                        (0..rows)
                            .map(|r| f(r, j) as f64 * s(r, j) as f64 * hv(r, d) as f64)
                            .collect()
                    },
                    |i| {
                        let (j, d) = (i / dim, i % dim);
                        (0..rows)
                            .map(|r| rounded(f(r, j)) * rounded(s(r, j) * hv(r, d)))
                            .collect()
                    },
                    |i| dtable_old[i] as f64,
                );
            }
        }
    }

    #[test]
    fn results_do_not_depend_on_thread_count() {
        // Several row parts, blocks and slices of several blocks, so that
        // tasks land on several threads.
        let sizes @ (rows, dim, vocab) = (600, 64, 30 * BLOCK_COLS + 5);
        let (h, table) = (values(rows * dim, 5, 1.0), values(vocab * dim, 6, 1.0));
        let row_factors = values(rows, 7, 1.0);
        let dtable_old = values(vocab * dim, 8, 1.0);
        for kernel in kernels("results_do_not_depend_on_thread_count") {
            let on = |threads| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap()
                    .install(|| run(kernel, sizes, &h, &table, &row_factors, &dtable_old))
            };
            let bits = |p: Products| {
                let sums = p.finished.iter().map(|f| f.sum).collect();
                [p.z, sums, p.dh, p.dtable]
                    .map(|v| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>())
            };
            let one = bits(on(1));
            for threads in [2, 3] {
                assert!(
                    one == bits(on(threads)),
                    "{kernel}: 1 and {threads} threads differ"
                );
            }
        }
    }
}
