//! Why a GPU backend could not be opened or a feature used.

/// Why a GPU backend could not be created or an optional feature used.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// No adapter matches the request; the message lists what was found.
    #[error("no usable GPU adapter: {0}")]
    NoAdapter(String),
    /// The adapter refused to open a device.
    #[error("could not open a device on {adapter}: {message}")]
    Device {
        /// The adapter's name.
        adapter: String,
        /// The driver's reason.
        message: String,
    },
    /// A shader or pipeline failed to build.
    #[error("kernel {kernel} failed to build: {message}")]
    Kernel {
        /// `file.wgsl` or `file.wgsl:entry_point`.
        kernel: String,
        /// The compiler's or validator's message.
        message: String,
    },
    /// The adapter lacks a feature that was asked for.
    #[error("{0} is not supported by this adapter")]
    Unsupported(&'static str),
}
