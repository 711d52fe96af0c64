//! How CPU ops split work across rayon threads.
//!
//! Every split here is fixed by the sizes alone (never by the number of
//! threads or by scheduling), and every output element is written by exactly
//! one task, so results are bit-for-bit the same run to run.

use rayon::prelude::*;

/// Below this many elements an op runs on the calling thread: a rayon
/// fork/join costs microseconds, more than the work it would spread.
pub(crate) const PAR_MIN_ELEMS: usize = 1 << 15;

/// Elements per task of an elementwise op.
pub(crate) const ELEM_BLOCK: usize = 1 << 12;

/// Calls `f(i, chunk)` for the `i`-th `chunk_len`-sized chunk of `out` (the
/// last may be shorter), on rayon's pool when `out` has at least
/// [`PAR_MIN_ELEMS`] elements.
pub(crate) fn for_each_chunk<T, F>(out: &mut [T], chunk_len: usize, f: F)
where
    T: Send,
    F: Fn(usize, &mut [T]) + Send + Sync,
{
    if out.is_empty() {
        return;
    }
    if out.len() >= PAR_MIN_ELEMS {
        out.par_chunks_mut(chunk_len)
            .enumerate()
            .for_each(|(i, c)| f(i, c));
    } else {
        out.chunks_mut(chunk_len)
            .enumerate()
            .for_each(|(i, c)| f(i, c));
    }
}

/// Like [`for_each_chunk`] over two outputs cut into the same number of
/// chunks: `f(i, a_chunk, b_chunk)`.
pub(crate) fn for_each_chunk2<A, B, F>(a: &mut [A], a_len: usize, b: &mut [B], b_len: usize, f: F)
where
    A: Send,
    B: Send,
    F: Fn(usize, &mut [A], &mut [B]) + Send + Sync,
{
    if a.is_empty() || b.is_empty() {
        return;
    }
    debug_assert_eq!(a.len().div_ceil(a_len), b.len().div_ceil(b_len));
    if a.len() + b.len() >= PAR_MIN_ELEMS {
        a.par_chunks_mut(a_len)
            .zip(b.par_chunks_mut(b_len))
            .enumerate()
            .for_each(|(i, (a, b))| f(i, a, b));
    } else {
        a.chunks_mut(a_len)
            .zip(b.chunks_mut(b_len))
            .enumerate()
            .for_each(|(i, (a, b))| f(i, a, b));
    }
}

/// `f(0), f(1), .., f(n - 1)` in order, computed on rayon's pool when
/// `parallel`.
pub(crate) fn map_blocks<T, F>(n: usize, parallel: bool, f: F) -> Vec<T>
where
    T: Send,
    F: Fn(usize) -> T + Send + Sync,
{
    if parallel {
        (0..n).into_par_iter().map(f).collect()
    } else {
        (0..n).map(f).collect()
    }
}
