//! What a product is cut into and what each task reads: the kernel this
//! CPU runs ([`Isa`]), the operands ([`Strided`], [`PackedB`], [`BSource`]),
//! one task's work ([`Job`]) and the matrixmultiply path of a task. The
//! microkernels (`avx512.rs`, `avx2.rs`, `x86.rs`) and the planning in
//! `mod.rs` both use these; `mod.rs` dispatches each job to its kernel.

use std::sync::OnceLock;

/// Values of `k` per register pass (see the module docs).
pub(crate) const KC: usize = 512;
/// Columns per task (a multiple of KC and of every kernel's tile width).
pub(crate) const NC: usize = 1024;
/// Which microkernel this CPU runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Isa {
    /// 6 x 64 tile in 24 zmm registers.
    Avx512,
    /// 6 x 16 tile in 12 ymm registers.
    Avx2,
    /// matrixmultiply's sgemm.
    Portable,
}

impl Isa {
    /// The best kernel this CPU supports (detected once).
    pub(crate) fn detect() -> Isa {
        static ISA: OnceLock<Isa> = OnceLock::new();
        *ISA.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            {
                if std::arch::is_x86_feature_detected!("avx512f") {
                    return Isa::Avx512;
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    return Isa::Avx2;
                }
            }
            Isa::Portable
        })
    }

    /// Whether this CPU can run this kernel.
    #[cfg(test)]
    pub(crate) fn supported(self) -> bool {
        match self {
            Isa::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// Rows and columns of the register tile.
    pub(super) fn tile(self) -> (usize, usize) {
        match self {
            Isa::Avx512 => (6, 64),
            Isa::Avx2 => (6, 16),
            Isa::Portable => (1, 1),
        }
    }
}

/// A strided operand: element `(i, p)` is `data[i * rs + p * cs]`.
#[derive(Clone, Copy)]
pub(super) struct Strided<'a> {
    pub(super) data: &'a [f32],
    pub(super) rs: usize,
    pub(super) cs: usize,
}

impl<'a> Strided<'a> {
    /// The `[rows, cols]` operand of a product, stored `[rows, cols]`, or
    /// `[cols, rows]` when `trans`.
    pub(super) fn new(data: &'a [f32], trans: bool, rows: usize, cols: usize) -> Self {
        let (rs, cs) = if trans { (1, rows) } else { (cols, 1) };
        Strided { data, rs, cs }
    }
}

/// `op(b)` `[k, n]` copied into panels of `nr` columns, each `[k, nr]`
/// row-major, the last one padded with zeros: the layout the microkernel
/// reads. Build it once to multiply by the same matrix many times.
pub(crate) struct PackedB {
    pub(super) k: usize,
    pub(super) n: usize,
    pub(super) isa: Isa,
    pub(super) panels: Vec<f32>,
}

impl PackedB {
    /// Packs `op(b)` `[k, n]` (`b` stored `[k, n]`, or `[n, k]` when
    /// `trans_b`) for this CPU's kernel.
    pub(crate) fn new(b: &[f32], trans_b: bool, k: usize, n: usize) -> Self {
        Self::for_isa(Isa::detect(), b, trans_b, k, n)
    }

    pub(super) fn for_isa(isa: Isa, b: &[f32], trans_b: bool, k: usize, n: usize) -> Self {
        assert_eq!(
            b.len(),
            k * n,
            "gemm: b has {} values, not {k}x{n}",
            b.len()
        );
        // matrixmultiply takes any strides: one panel, `op(b)` row-major.
        let nr = match isa {
            Isa::Portable => n.max(1),
            _ => isa.tile().1,
        };
        let (rs, cs) = if trans_b { (1, k) } else { (n, 1) };
        let panel_count = n.div_ceil(nr);
        let mut panels = vec![0.0f32; panel_count * k * nr];
        for (j, panel) in panels.chunks_exact_mut((k * nr).max(1)).enumerate() {
            let cols = nr.min(n - j * nr);
            for (p, row) in panel.chunks_exact_mut(nr).enumerate() {
                for (jj, v) in row[..cols].iter_mut().enumerate() {
                    *v = b[p * rs + (j * nr + jj) * cs];
                }
            }
        }
        PackedB { k, n, isa, panels }
    }
}

/// Where the microkernel reads rows of `op(b)` from.
#[derive(Clone, Copy)]
pub(super) enum BSource<'a> {
    /// `op(b)` row-major `[k, n]` with row stride `rs`: panel `j`, row `p`
    /// starts at `p * rs + j * NR`.
    InPlace { data: &'a [f32], rs: usize },
    /// Packed panels.
    Packed(&'a PackedB),
}

/// A raw pointer that tasks writing disjoint parts of one buffer share.
pub(crate) struct SharedMut<T = f32>(pub(crate) *mut T);
// SAFETY: every task writes only the elements of its own rows x columns
// (or its own part's buffer), so no two threads touch the same element.
unsafe impl<T: Send> Send for SharedMut<T> {}
unsafe impl<T: Send> Sync for SharedMut<T> {}

impl<T> Clone for SharedMut<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for SharedMut<T> {}

impl<T> SharedMut<T> {
    /// The pointer `offset` elements further.
    pub(crate) fn offset(self, offset: usize) -> SharedMut<T> {
        SharedMut(self.0.wrapping_add(offset))
    }
}

/// Called on each row of each block of [`NC`] columns of a finished product:
/// `(row, block, values)`.
pub(super) type Finish<'a> = &'a (dyn Fn(usize, usize, &mut [f32]) + Sync);

/// One task's operands: `c` (row stride `ldc`) gets `op(a) @ op(b)` over
/// the task's k range, plus `beta * c`.
pub(super) struct Job<'a> {
    pub(super) a: Strided<'a>,
    pub(super) b: BSource<'a>,
    pub(super) c: SharedMut,
    pub(super) ldc: usize,
    pub(super) beta: f32,
    /// Called on each row of the task's columns (one block of [`NC`]) once
    /// its row tile is done.
    pub(super) finish: Option<Finish<'a>>,
}

impl Job<'_> {
    /// [`Job::run`] through matrixmultiply.
    ///
    /// # Safety
    /// As [`Job::run`].
    pub(super) unsafe fn portable(
        &self,
        rows: std::ops::Range<usize>,
        cols: std::ops::Range<usize>,
        ks: std::ops::Range<usize>,
    ) {
        let (b, rsb, csb) = match self.b {
            BSource::InPlace { data, rs } => (
                data.as_ptr().wrapping_add(ks.start * rs + cols.start),
                rs,
                1,
            ),
            BSource::Packed(pb) => {
                // Portable packing is one panel: `op(b)` row-major.
                (
                    pb.panels
                        .as_ptr()
                        .wrapping_add(ks.start * pb.n + cols.start),
                    pb.n,
                    1,
                )
            }
        };
        // SAFETY: the ranges lie inside the operands (the caller's promise).
        unsafe {
            matrixmultiply::sgemm(
                rows.len(),
                ks.len(),
                cols.len(),
                1.0,
                self.a
                    .data
                    .as_ptr()
                    .wrapping_add(rows.start * self.a.rs + ks.start * self.a.cs),
                self.a.rs as isize,
                self.a.cs as isize,
                b,
                rsb as isize,
                csb as isize,
                self.beta,
                self.c.0.wrapping_add(rows.start * self.ldc + cols.start),
                self.ldc as isize,
                1,
            );
        }
    }
}
