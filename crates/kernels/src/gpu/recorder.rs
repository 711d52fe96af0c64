//! Recording work: one pending command encoder that collects every upload,
//! clear, copy and kernel dispatch until the host needs a result (or a batch
//! of passes has accumulated), then goes to the queue as one submission.
//!
//! Each dispatch gets its parameters from its own 256-byte slot of one uniform
//! buffer. The slots of a batch are written with `Queue::write_buffer` just
//! before the batch is submitted, which wgpu orders after the previous
//! submissions and before this one, so the buffer can be reused by every batch.

use std::collections::HashMap;
use std::sync::{Arc, mpsc};

use super::kernel::Pipeline;

/// Passes recorded before the batch is submitted.
pub(crate) const MAX_PASSES: usize = 256;
/// Bytes of parameters per dispatch (also the largest uniform offset alignment
/// WebGPU allows, so every slot is correctly aligned).
const PARAMS_SLOT: u64 = 256;

/// A byte range of a buffer bound to one kernel binding.
#[derive(Clone, Copy)]
pub(crate) struct BufferRange<'a> {
    pub(crate) buffer: &'a wgpu::Buffer,
    pub(crate) offset: u64,
    pub(crate) size: u64,
}

/// GPU timestamps around every pass, summed per kernel.
struct Profiler {
    query_set: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    readback: wgpu::Buffer,
    period_ns: f64,
    totals: HashMap<Arc<str>, (f64, u64)>,
}

pub(crate) struct Recorder {
    encoder: Option<wgpu::CommandEncoder>,
    params: Vec<u8>,
    params_buffer: wgpu::Buffer,
    /// The kernel of every pass of the pending batch.
    passes: Vec<Arc<str>>,
    profiler: Option<Profiler>,
}

impl Recorder {
    pub(crate) fn new(device: &wgpu::Device) -> Self {
        let params_buffer = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("kernel params"),
            size: MAX_PASSES as u64 * PARAMS_SLOT,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Recorder {
            encoder: None,
            params: Vec::with_capacity(MAX_PASSES * PARAMS_SLOT as usize),
            params_buffer,
            passes: Vec::with_capacity(MAX_PASSES),
            profiler: None,
        }
    }

    /// The pending encoder, for copies and clears between passes.
    pub(crate) fn encoder(&mut self, device: &wgpu::Device) -> &mut wgpu::CommandEncoder {
        self.encoder.get_or_insert_with(|| {
            device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("sasrec batch"),
            })
        })
    }

    /// Records one compute pass running `pipeline` on a grid of workgroups,
    /// with `params` (the kernel's params struct as bytes) in the next
    /// parameter slot and `buffers` bound in the order of `pipeline.buffers`.
    pub(crate) fn dispatch(
        &mut self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        pipeline: &Pipeline,
        params: &[u8],
        buffers: &[BufferRange<'_>],
        grid: [u32; 3],
    ) {
        if self.passes.len() == MAX_PASSES {
            self.flush(device, queue);
        }
        let slot = self.passes.len();
        let params_offset = slot as u64 * PARAMS_SLOT;
        assert!(
            params.len() as u64 <= PARAMS_SLOT && params.len() == pipeline.params_size,
            "{}: {} bytes of params",
            pipeline.name,
            params.len()
        );
        self.params.extend_from_slice(params);
        self.params
            .resize((params_offset + PARAMS_SLOT) as usize, 0);

        assert_eq!(
            buffers.len(),
            pipeline.buffers.len(),
            "{}: wrong number of buffers",
            pipeline.name
        );
        fn binding<'a>(binding: u32, range: BufferRange<'a>) -> wgpu::BindGroupEntry<'a> {
            wgpu::BindGroupEntry {
                binding,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: range.buffer,
                    offset: range.offset,
                    size: wgpu::BufferSize::new(range.size),
                }),
            }
        }
        let params_range = BufferRange {
            buffer: &self.params_buffer,
            offset: params_offset,
            size: PARAMS_SLOT,
        };
        let entries: Vec<wgpu::BindGroupEntry> = std::iter::once(binding(0, params_range))
            .chain(
                pipeline
                    .buffers
                    .iter()
                    .zip(buffers)
                    .map(|(b, &range)| binding(b.binding, range)),
            )
            .collect();
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(&pipeline.name),
            layout: &pipeline.layout,
            entries: &entries,
        });

        let encoder = self.encoder.get_or_insert_with(|| {
            device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("sasrec batch"),
            })
        });
        let timestamp_writes =
            self.profiler
                .as_ref()
                .map(|profiler| wgpu::ComputePassTimestampWrites {
                    query_set: &profiler.query_set,
                    beginning_of_pass_write_index: Some(2 * slot as u32),
                    end_of_pass_write_index: Some(2 * slot as u32 + 1),
                });
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some(&pipeline.name),
            timestamp_writes,
        });
        pass.set_pipeline(&pipeline.pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        pass.dispatch_workgroups(grid[0], grid[1], grid[2]);
        drop(pass);
        self.passes.push(Arc::clone(&pipeline.name));
    }

    /// Submits everything recorded so far.
    pub(crate) fn flush(&mut self, device: &wgpu::Device, queue: &wgpu::Queue) {
        let Some(mut encoder) = self.encoder.take() else {
            return;
        };
        let passes = self.passes.len() as u32;
        if passes > 0 {
            queue.write_buffer(&self.params_buffer, 0, &self.params);
        }
        if let (Some(profiler), true) = (&self.profiler, passes > 0) {
            encoder.resolve_query_set(&profiler.query_set, 0..2 * passes, &profiler.resolve, 0);
            encoder.copy_buffer_to_buffer(
                &profiler.resolve,
                0,
                &profiler.readback,
                0,
                16 * passes as u64,
            );
        }
        queue.submit([encoder.finish()]);
        if passes > 0 && self.profiler.is_some() {
            self.collect_timestamps(device);
        }
        self.params.clear();
        self.passes.clear();
    }

    /// Records an upload of `data` into the start of `dst`. It goes through a
    /// fresh staging buffer copied inside the encoder, so it lands after the
    /// commands recorded before it (a queue write would land before them, and
    /// `dst` may be a pooled buffer that those commands still read).
    pub(crate) fn upload(&mut self, device: &wgpu::Device, dst: &wgpu::Buffer, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let staging = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("upload"),
            size: data.len() as u64,
            usage: wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: true,
        });
        staging
            .get_mapped_range_mut(..)
            .expect("staging buffer is mapped at creation")
            .copy_from_slice(data);
        staging.unmap();
        self.encoder(device)
            .copy_buffer_to_buffer(&staging, 0, dst, 0, data.len() as u64);
    }

    /// Submits the pending work and reads `bytes` bytes from the start of `src`.
    pub(crate) fn read(
        &mut self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        src: &wgpu::Buffer,
        bytes: u64,
    ) -> Vec<u8> {
        if bytes == 0 {
            return Vec::new();
        }
        let readback = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.encoder(device)
            .copy_buffer_to_buffer(src, 0, &readback, 0, bytes);
        self.flush(device, queue);
        map_and_read(device, &readback)
    }

    /// Starts timing every pass (needs `Features::TIMESTAMP_QUERY`).
    pub(crate) fn enable_profiling(&mut self, device: &wgpu::Device, queue: &wgpu::Queue) {
        if self.profiler.is_some() {
            return;
        }
        self.flush(device, queue);
        let queries = 2 * MAX_PASSES as u32;
        let bytes = 8 * queries as u64;
        self.profiler = Some(Profiler {
            query_set: device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("kernel timestamps"),
                ty: wgpu::QueryType::Timestamp,
                count: queries,
            }),
            resolve: device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("timestamp resolve"),
                size: bytes,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            }),
            readback: device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("timestamp readback"),
                size: bytes,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
            period_ns: f64::from(queue.get_timestamp_period()),
            totals: HashMap::new(),
        });
    }

    /// `(kernel, total milliseconds, passes)` since profiling started or was
    /// last reset, slowest first.
    pub(crate) fn profile(&self) -> Vec<(String, f64, u64)> {
        let Some(profiler) = &self.profiler else {
            return Vec::new();
        };
        let mut rows: Vec<(String, f64, u64)> = profiler
            .totals
            .iter()
            .map(|(name, &(ns, calls))| (name.to_string(), ns / 1e6, calls))
            .collect();
        rows.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        rows
    }

    pub(crate) fn reset_profile(&mut self) {
        if let Some(profiler) = &mut self.profiler {
            profiler.totals.clear();
        }
    }

    /// Waits for the batch just submitted and adds its pass times.
    fn collect_timestamps(&mut self, device: &wgpu::Device) {
        let profiler = self.profiler.as_mut().expect("profiling is on");
        let bytes = map_and_read(device, &profiler.readback);
        let ticks: &[u64] = bytemuck::cast_slice(&bytes);
        for (pass, name) in self.passes.iter().enumerate() {
            let elapsed = ticks[2 * pass + 1].saturating_sub(ticks[2 * pass]);
            let total = profiler.totals.entry(Arc::clone(name)).or_insert((0.0, 0));
            total.0 += elapsed as f64 * profiler.period_ns;
            total.1 += 1;
        }
    }
}

/// Maps a `MAP_READ` buffer (whose copy has been submitted), waits, and
/// copies its contents out.
fn map_and_read(device: &wgpu::Device, buffer: &wgpu::Buffer) -> Vec<u8> {
    let (sender, receiver) = mpsc::channel();
    buffer.map_async(wgpu::MapMode::Read, .., move |result| {
        // The receiver outlives the poll below, so a send cannot fail.
        let _ = sender.send(result);
    });
    device
        .poll(wgpu::PollType::wait_indefinitely())
        .expect("the GPU device was lost while waiting for results");
    receiver
        .recv()
        .expect("map callback ran")
        .expect("mapping a readback buffer failed");
    let bytes = buffer
        .get_mapped_range(..)
        .expect("buffer is mapped")
        .to_vec();
    buffer.unmap();
    bytes
}
