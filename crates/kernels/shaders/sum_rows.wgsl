// Column sums of a row-major [rows, cols] matrix, deterministically.
//
// One pass turns [rows, cols] into [ceil(rows / ROWS_PER_GROUP), cols]
// partial sums; the host repeats it until one row is left. A workgroup is
// COLS columns x LANES row lanes: lane ty adds rows ty, ty + LANES, ... of its
// block of ROWS_PER_GROUP rows (consecutive invocations read consecutive
// columns), then the lanes are added in a fixed order. No atomics, so the
// result is the same on every run. Workgroup g of the flat grid does column
// group g % col_groups of row block g / col_groups.
// Injected: COLS, LANES, ROWS_PER_GROUP. Prepended: common.wgsl.

struct Params {
    rows: u32,
    cols: u32,
    // element offset of the matrix inside the bound range of x
    x_off: u32,
    // ceil(cols / COLS)
    col_groups: u32,
    // element offset of the first partial row inside the bound range of partial
    partial_off: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> partial: array<f32>;

var<workgroup> lanes: array<f32, LANES * COLS>;

@compute @workgroup_size(COLS, LANES)
fn sum_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_id) lid: vec3<u32>) {
    let g = workgroup_index(wid, nwg);
    let blocks = (p.rows + ROWS_PER_GROUP - 1u) / ROWS_PER_GROUP;
    if (g >= p.col_groups * blocks) {
        return;
    }
    let col = (g % p.col_groups) * COLS + lid.x;
    let block = g / p.col_groups;
    let first = block * ROWS_PER_GROUP;
    let last = min(first + ROWS_PER_GROUP, p.rows);
    var sum = 0.0;
    if (col < p.cols) {
        for (var r = first + lid.y; r < last; r += LANES) {
            sum += x[p.x_off + r * p.cols + col];
        }
    }
    lanes[lid.y * COLS + lid.x] = sum;
    workgroupBarrier();
    if (lid.y == 0u && col < p.cols) {
        var total = lanes[lid.x];
        for (var lane = 1u; lane < LANES; lane++) {
            total += lanes[lane * COLS + lid.x];
        }
        partial[p.partial_off + block * p.cols + col] = total;
    }
}
