// Tiled matrix product: C[m, n] = op(A)[m, k] @ op(B)[k, n], optionally
// plus the old C (accumulate, beta = 1) and plus bias[n] (nn.Linear).
//
// A workgroup of 16 x 16 invocations computes a 64 x 64 tile of C. Each step
// stages a 64 x 16 slab of op(A) and a 16 x 64 slab of op(B) in workgroup
// memory, then every invocation updates a 4 x 4 register block: rows
// ty + 16 r and columns tx + 16 c (r, c in 0..4). Strided blocks make
// neighbouring invocations read neighbouring shared-memory words and write
// neighbouring columns of C (coalesced).
//
// TRANS_A / TRANS_B are pipeline constants: the loader reads each slab in
// storage order (consecutive invocations read consecutive addresses)
// whichever way the operand is stored. Operands are bound as sub-ranges of
// their buffers; the *_off params are the element offsets inside those ranges.
//
// Split-K: when C has too few tiles to fill the GPU but k is long (weight
// gradients, dh = dlogits @ table), grid layer z computes the product over
// k in [z * k_split, (z + 1) * k_split) into its own partial matrix
// (c_split_stride elements apart), and `split_k_sum` adds the partials in
// order: deterministic, no atomics.
// Injected: TILE (64, the square output tile), TILE_K (16), SUM_WG (256, the
// workgroup of split_k_sum). Prepended: common.wgsl.

override TRANS_A: bool = false;
override TRANS_B: bool = false;

// Each of the 16 x 16 invocations owns a 4 x 4 block of the tile.
const THREADS: u32 = TILE / 4u;
// Slab elements each invocation loads per step (4).
const LOADS: u32 = TILE * TILE_K / (THREADS * THREADS);
// Slab rows are padded by one word so that the transposing stores into
// workgroup memory do not all hit the same bank.
const STRIDE: u32 = TILE + 1u;

struct Params {
    m: u32,
    n: u32,
    k: u32,
    // Row strides (elements) of A, B and C as stored.
    lda: u32,
    ldb: u32,
    ldc: u32,
    a_off: u32,
    b_off: u32,
    c_off: u32,
    bias_off: u32,
    accumulate: u32,
    has_bias: u32,
    // depth of one split-K slice (k when not split)
    k_split: u32,
    // elements between the partial outputs of consecutive slices
    c_split_stride: u32,
    // split_k_sum: the number of slices to add
    splits: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> c: array<f32>;
// split_k_sum: the partial products [splits, m, n]
@group(0) @binding(5) var<storage, read> partial: array<f32>;

// a_slab[kk * STRIDE + i] = op(A)[row0 + i, k0 + kk]
var<workgroup> a_slab: array<f32, TILE_K * STRIDE>;
// b_slab[kk * STRIDE + j] = op(B)[k0 + kk, col0 + j]
var<workgroup> b_slab: array<f32, TILE_K * STRIDE>;

fn load_a(row0: u32, k0: u32, k_end: u32, e: u32) {
    var i: u32;
    var kk: u32;
    if (TRANS_A) {
        // A stored [k, m]: consecutive e walk along m.
        kk = e / TILE;
        i = e % TILE;
    } else {
        // A stored [m, k]: consecutive e walk along k.
        i = e / TILE_K;
        kk = e % TILE_K;
    }
    let gi = row0 + i;
    let gk = k0 + kk;
    var v = 0.0;
    if (gi < p.m && gk < k_end) {
        if (TRANS_A) {
            v = a[p.a_off + gk * p.lda + gi];
        } else {
            v = a[p.a_off + gi * p.lda + gk];
        }
    }
    a_slab[kk * STRIDE + i] = v;
}

fn load_b(col0: u32, k0: u32, k_end: u32, e: u32) {
    var j: u32;
    var kk: u32;
    if (TRANS_B) {
        // B stored [n, k]: consecutive e walk along k.
        j = e / TILE_K;
        kk = e % TILE_K;
    } else {
        // B stored [k, n]: consecutive e walk along n.
        kk = e / TILE;
        j = e % TILE;
    }
    let gj = col0 + j;
    let gk = k0 + kk;
    var v = 0.0;
    if (gj < p.n && gk < k_end) {
        if (TRANS_B) {
            v = b[p.b_off + gj * p.ldb + gk];
        } else {
            v = b[p.b_off + gk * p.ldb + gj];
        }
    }
    b_slab[kk * STRIDE + j] = v;
}

fn store(c_base: u32, row: u32, col0: u32, tx: u32, acc: vec4<f32>) {
    if (row >= p.m) {
        return;
    }
    for (var cc = 0u; cc < 4u; cc++) {
        let col = col0 + tx + THREADS * cc;
        if (col < p.n) {
            let idx = c_base + row * p.ldc + col;
            var v = acc[cc];
            if (p.has_bias != 0u) {
                v += bias[p.bias_off + col];
            }
            if (p.accumulate != 0u) {
                v += c[idx];
            }
            c[idx] = v;
        }
    }
}

@compute @workgroup_size(THREADS, THREADS)
fn matmul(@builtin(workgroup_id) wid: vec3<u32>,
          @builtin(local_invocation_id) lid: vec3<u32>,
          @builtin(local_invocation_index) tid: u32) {
    let row0 = wid.y * TILE;
    let col0 = wid.x * TILE;
    let tx = lid.x;
    let ty = lid.y;
    let k_begin = wid.z * p.k_split;
    let k_end = min(k_begin + p.k_split, p.k);
    let c_base = p.c_off + wid.z * p.c_split_stride;

    // acc_r[cc] accumulates C[row0 + ty + 16 r, col0 + tx + 16 cc].
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);

    for (var k0 = k_begin; k0 < k_end; k0 += TILE_K) {
        for (var s = 0u; s < LOADS; s++) {
            load_a(row0, k0, k_end, tid + THREADS * THREADS * s);
            load_b(col0, k0, k_end, tid + THREADS * THREADS * s);
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TILE_K; kk++) {
            let ab = kk * STRIDE + ty;
            let bb = kk * STRIDE + tx;
            let bv = vec4<f32>(b_slab[bb], b_slab[bb + THREADS], b_slab[bb + 2u * THREADS],
                               b_slab[bb + 3u * THREADS]);
            acc0 = fma(vec4<f32>(a_slab[ab]), bv, acc0);
            acc1 = fma(vec4<f32>(a_slab[ab + THREADS]), bv, acc1);
            acc2 = fma(vec4<f32>(a_slab[ab + 2u * THREADS]), bv, acc2);
            acc3 = fma(vec4<f32>(a_slab[ab + 3u * THREADS]), bv, acc3);
        }
        workgroupBarrier();
    }

    store(c_base, row0 + ty, col0, tx, acc0);
    store(c_base, row0 + ty + THREADS, col0, tx, acc1);
    store(c_base, row0 + ty + 2u * THREADS, col0, tx, acc2);
    store(c_base, row0 + ty + 3u * THREADS, col0, tx, acc3);
}

// C[r, c] = sum over slices of partial[s, r, c] (in slice order)
// (+ bias[c]) (+ old C[r, c]): one invocation per element of the m x n block.
@compute @workgroup_size(SUM_WG)
fn split_k_sum(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = workgroup_index(wid, nwg) * SUM_WG + lid.x;
    let size = p.m * p.n;
    if (i >= size) {
        return;
    }
    var v = 0.0;
    for (var s = 0u; s < p.splits; s++) {
        v += partial[s * size + i];
    }
    let col = i % p.n;
    let idx = p.c_off + (i / p.n) * p.ldc + col;
    if (p.has_bias != 0u) {
        v += bias[p.bias_off + col];
    }
    if (p.accumulate != 0u) {
        v += c[idx];
    }
    c[idx] = v;
}
