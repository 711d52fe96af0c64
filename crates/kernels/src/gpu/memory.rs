//! Device memory: a pool of reusable storage buffers and the tensor handles
//! that own them.
//!
//! A training step allocates the same sizes every time, so buffers freed by
//! one step are handed to the next instead of going back to the driver.
//! Buffers are kept in size classes (powers of two up to 64 KiB, then
//! multiples of 1/16 of the next power of two), wasting at most 1/8 of a
//! buffer. Reusing a
//! buffer right away is safe even while commands that read it are still
//! queued: commands run in the order they were recorded, and wgpu puts the
//! barriers between them.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

/// Free buffers by size class, with a cap on the bytes kept.
pub(crate) struct BufferPool {
    free: HashMap<u64, Vec<wgpu::Buffer>>,
    free_bytes: u64,
    max_free_bytes: u64,
}

/// Usage of every pooled buffer: bound as storage, copied to and from.
const POOL_USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

impl BufferPool {
    pub(crate) fn new(max_free_bytes: u64) -> Self {
        BufferPool {
            free: HashMap::new(),
            free_bytes: 0,
            max_free_bytes,
        }
    }

    /// The size class holding `bytes`: at least 256 bytes.
    fn class_of(bytes: u64) -> u64 {
        let bytes = bytes.max(256);
        let pow2 = bytes.next_power_of_two();
        if pow2 <= 1 << 16 {
            return pow2;
        }
        // bytes > pow2 / 2, so rounding up to pow2 / 16 wastes under 1/8.
        let step = pow2 / 16;
        bytes.div_ceil(step) * step
    }

    fn take(&mut self, class: u64) -> Option<wgpu::Buffer> {
        let buffer = self.free.get_mut(&class)?.pop()?;
        self.free_bytes -= class;
        Some(buffer)
    }

    fn give_back(&mut self, class: u64, buffer: wgpu::Buffer) {
        if self.free_bytes + class <= self.max_free_bytes {
            self.free_bytes += class;
            self.free.entry(class).or_default().push(buffer);
        }
    }

    /// Drops every free buffer.
    pub(crate) fn clear(&mut self) {
        self.free.clear();
        self.free_bytes = 0;
    }
}

/// A pooled buffer; returns to its pool when the last handle drops.
pub(crate) struct Storage {
    buffer: wgpu::Buffer,
    class: u64,
    pool: Arc<Mutex<BufferPool>>,
}

impl Storage {
    /// A buffer of at least `bytes` bytes from `pool`, or a new one.
    pub(crate) fn new(device: &wgpu::Device, pool: &Arc<Mutex<BufferPool>>, bytes: u64) -> Self {
        let class = BufferPool::class_of(bytes);
        let reused = pool.lock().expect("buffer pool poisoned").take(class);
        let buffer = reused.unwrap_or_else(|| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("sasrec tensor"),
                size: class,
                usage: POOL_USAGE,
                mapped_at_creation: false,
            })
        });
        Storage {
            buffer,
            class,
            pool: Arc::clone(pool),
        }
    }

    pub(crate) fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }
}

impl Drop for Storage {
    fn drop(&mut self) {
        if let Ok(mut pool) = self.pool.lock() {
            pool.give_back(self.class, self.buffer.clone());
        }
    }
}

/// A dense row-major f32 tensor on the GPU. Clones share the buffer.
#[derive(Clone)]
pub struct GpuTensor {
    pub(crate) storage: Arc<Storage>,
    pub(crate) shape: Vec<usize>,
}

impl GpuTensor {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The storage buffer holding the values, row-major from offset 0, for
    /// running kernels of your own on it (see [`WgpuBackend::record`]). The
    /// buffer may be larger than the tensor (pooled size classes).
    ///
    /// [`WgpuBackend::record`]: crate::gpu::WgpuBackend::record
    pub fn buffer(&self) -> &wgpu::Buffer {
        self.storage.buffer()
    }
}

impl fmt::Debug for GpuTensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GpuTensor{:?}", self.shape)
    }
}

/// A vector of u32 indices on the GPU, with its host copy.
#[derive(Clone)]
pub struct GpuIds {
    pub(crate) storage: Arc<Storage>,
    pub(crate) host: Arc<[u32]>,
}

impl GpuIds {
    /// The storage buffer holding the indices as `u32` from offset 0.
    pub fn buffer(&self) -> &wgpu::Buffer {
        self.storage.buffer()
    }

    /// The host copy.
    pub fn host(&self) -> &[u32] {
        &self.host
    }
}

impl fmt::Debug for GpuIds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GpuIds[{}]", self.host.len())
    }
}

#[cfg(test)]
mod tests {
    use super::BufferPool;

    #[test]
    fn size_classes_waste_at_most_an_eighth() {
        assert_eq!(BufferPool::class_of(0), 256);
        assert_eq!(BufferPool::class_of(300), 512);
        assert_eq!(BufferPool::class_of(1 << 16), 1 << 16);
        for bytes in [65_537u64, 100_000, 3 << 20, (1 << 30) + 1, 123_456_789] {
            let class = BufferPool::class_of(bytes);
            assert!(
                class >= bytes && (class - bytes) * 8 <= bytes,
                "{bytes} -> {class}"
            );
        }
    }
}
