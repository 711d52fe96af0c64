//! The CPU backend's fused cross-entropy at SASRec's sizes: time of forward
//! and forward+backward (criterion; with the bf16 products too, where the
//! CPU has a kernel for them), and peak heap use, which must not grow
//! with rows x vocab (a counting global allocator).
//!
//! `cargo bench -p sasrec-kernels --bench cross_entropy`; the memory table
//! is printed first.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};

use criterion::{Criterion, criterion_group};
use sasrec_kernels::cpu::{
    Bf16Kernel, CE_BUFFER_BYTES, CpuIds, CpuTensor, ce_chunk_rows, cross_entropy_chunked_bf16,
};
use sasrec_kernels::{Backend, CpuBackend};

/// The system allocator, counting live bytes and their high-water mark.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        unsafe { System.dealloc(p, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// SASRec's model width.
const DIM: usize = 64;

/// Deterministic pseudo-random inputs: `h` `[rows, DIM]`, table
/// `[vocab, DIM]` and targets with every fifth row ignored (padding).
fn inputs(rows: usize, vocab: usize) -> (CpuTensor, CpuTensor, CpuIds) {
    let mut state = 0x2545_f491_u32;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state
    };
    let mut value = move || (next() as f32 / u32::MAX as f32 - 0.5) * 0.2;
    let h: Vec<f32> = (0..rows * DIM).map(|_| value()).collect();
    let table: Vec<f32> = (0..vocab * DIM).map(|_| value()).collect();
    let targets: Vec<u32> = (0..rows)
        .map(|r| {
            if r % 5 == 0 {
                0
            } else {
                1 + (r * 7919 % (vocab - 1)) as u32
            }
        })
        .collect();
    (
        CpuTensor::new(h, &[rows, DIM]),
        CpuTensor::new(table, &[vocab, DIM]),
        CpuIds::new(targets),
    )
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// Peak heap bytes allocated during one forward+backward above what was
/// live before it (so it includes the returned gradients).
fn print_peak_memory_table() {
    let be = CpuBackend;
    println!(
        "CPU cross-entropy, forward + backward, dim {DIM}, buffer target {} MiB",
        mib(CE_BUFFER_BYTES)
    );
    println!(
        "| rows | vocab | chunk rows | peak extra heap | of which outputs (dh, dtable) | working memory | full logits matrix |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for vocab in [9725, 40_295] {
        for rows in [640, 6400, 12_800] {
            let (h, table, targets) = inputs(rows, vocab);
            let before = LIVE.load(Ordering::Relaxed);
            PEAK.store(before, Ordering::Relaxed);
            let ce = be.cross_entropy(&h, &table, &targets, true);
            let extra = PEAK.load(Ordering::Relaxed) - before;
            drop(black_box(ce));
            let outputs = (rows + vocab) * DIM * 4;
            println!(
                "| {rows} | {vocab} | {} | {:.1} MiB | {:.1} MiB | {:.1} MiB | {:.0} MiB |",
                ce_chunk_rows(vocab),
                mib(extra),
                mib(outputs),
                mib(extra - outputs),
                mib(rows * vocab * 4),
            );
        }
    }
    println!();
}

fn bench_cross_entropy(c: &mut Criterion) {
    let be = CpuBackend;
    let mut group = c.benchmark_group("cpu_cross_entropy");
    group.sample_size(10);
    for (rows, vocab) in [(6400, 9725), (6400, 40_295)] {
        let (h, table, targets) = inputs(rows, vocab);
        group.bench_function(
            format!("forward rows={rows} dim={DIM} vocab={vocab}"),
            |b| b.iter(|| be.cross_entropy(&h, &table, &targets, false)),
        );
        group.bench_function(
            format!("forward+backward rows={rows} dim={DIM} vocab={vocab}"),
            |b| b.iter(|| be.cross_entropy(&h, &table, &targets, true)),
        );
        // The bf16 products (`--precision bf16`), where this CPU has a kernel.
        if let Some(kernel) = Bf16Kernel::detect() {
            let chunk = ce_chunk_rows(vocab);
            group.bench_function(
                format!("forward+backward bf16 ({kernel}) rows={rows} dim={DIM} vocab={vocab}"),
                |b| {
                    b.iter(|| cross_entropy_chunked_bf16(&h, &table, &targets, true, chunk, kernel))
                },
            );
        }
    }
    group.finish();
}

criterion_group!(benches, bench_cross_entropy);

fn main() {
    print_peak_memory_table();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
