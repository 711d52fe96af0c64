//! The one trait every log reader of this folder implements.

use std::path::Path;

use crate::{DataError, InputSpec, Interactions};

/// Reads one input format.
pub(super) trait LogReader {
    /// Every row of the log at `path` (a file, or a folder where the format
    /// has parts), read as `spec` describes; a malformed row is an error
    /// naming the file, the line or row, and the field.
    fn read(&self, path: &Path, spec: &InputSpec) -> Result<Interactions, DataError>;
}
