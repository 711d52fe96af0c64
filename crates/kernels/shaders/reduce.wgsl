// Column sums of a row-major [rows, cols] matrix, deterministically.
//
// One pass turns [rows, cols] into [ceil(rows / ROWS_PER_GROUP), cols]
// partial sums; the host repeats it until one row is left. A workgroup is
// 64 columns x 4 row lanes: lane ty adds rows ty, ty + 4, ... of its block of
// ROWS_PER_GROUP rows (consecutive invocations read consecutive columns), then
// the 4 lanes are added in a fixed order. No atomics, so the result is the
// same on every run.

const COLS: u32 = 64u;
const LANES: u32 = 4u;
const ROWS_PER_GROUP: u32 = 256u;

struct Params {
    rows: u32,
    cols: u32,
    // element offset of the matrix inside the bound range of x
    x_off: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> partial: array<f32>;

var<workgroup> lanes: array<f32, 256>; // LANES * COLS

@compute @workgroup_size(64, 4)
fn column_sum(@builtin(workgroup_id) wid: vec3<u32>,
              @builtin(local_invocation_id) lid: vec3<u32>) {
    let col = wid.x * COLS + lid.x;
    let block = wid.y;
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
        let total = ((lanes[lid.x] + lanes[COLS + lid.x]) + lanes[2u * COLS + lid.x])
            + lanes[3u * COLS + lid.x];
        partial[block * p.cols + col] = total;
    }
}
