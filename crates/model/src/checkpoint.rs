//! Safetensors files: checkpoints and weights.
//!
//! Tensor names are the notebook's PyTorch `state_dict` names, so
//! `model.load_state_dict(safetensors.torch.load_file(path))` loads our
//! weights and a `state_dict` saved with `safetensors.torch.save_file` loads
//! here. Loading refuses non-finite values, naming the tensor: a NaN in a
//! weight file must never turn into a recommendation.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use sasrec_kernels::Backend;

use crate::config::ModelConfig;
use crate::sasrec::SasRec;
use crate::text::bounded;

/// A named f32 tensor on the host: `(name, shape, values)`.
pub type NamedTensor = (String, Vec<usize>, Vec<f32>);

/// The safetensors bytes of `tensors` with string `metadata`.
pub fn to_safetensors(
    tensors: &[NamedTensor],
    metadata: HashMap<String, String>,
) -> Result<Vec<u8>> {
    let bytes: Vec<Vec<u8>> = tensors.iter().map(|(_, _, data)| le_bytes(data)).collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), bytes)| {
            let view = TensorView::new(Dtype::F32, shape.clone(), bytes)
                .with_context(|| format!("tensor {name}: data does not match shape {shape:?}"))?;
            Ok((name.clone(), view))
        })
        .collect::<Result<Vec<_>>>()?;
    let metadata = (!metadata.is_empty()).then_some(metadata);
    safetensors::serialize(views, metadata).context("serialising safetensors")
}

/// Every tensor of a safetensors file's bytes (all must be finite f32),
/// sorted by name, and its metadata. `file` names the file in errors.
pub fn from_safetensors(
    bytes: &[u8],
    file: &Path,
) -> Result<(Vec<NamedTensor>, HashMap<String, String>)> {
    let invalid = |err: safetensors::SafeTensorError| {
        anyhow::anyhow!(
            "{} is not a valid safetensors file ({})",
            file.display(),
            bounded(&err.to_string(), 80)
        )
    };
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(invalid)?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let tensors = SafeTensors::deserialize(bytes).map_err(invalid)?;
    let mut out = Vec::with_capacity(tensors.len());
    for (name, view) in tensors.iter() {
        let shown = bounded(name, 80);
        if view.dtype() != Dtype::F32 {
            bail!(
                "{}: tensor {shown} is {:?}; only float32 is supported (convert with .float() before saving)",
                file.display(),
                view.dtype()
            );
        }
        let values: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        if let Some((i, v)) = first_non_finite(&values) {
            bail!(
                "{}: tensor {shown} holds {v} (element {i} of shape {:?}); the file is corrupt or the model diverged",
                file.display(),
                view.shape()
            );
        }
        out.push((name.to_string(), view.shape().to_vec(), values));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok((out, metadata))
}

/// Loads every tensor of a safetensors file (all must be finite f32) and its
/// metadata.
pub fn load_safetensors(path: &Path) -> Result<(Vec<NamedTensor>, HashMap<String, String>)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    from_safetensors(&bytes, path)
}

/// Loads SASRec weights from a safetensors file written by us or by
/// `safetensors.torch.save_file(model.state_dict(), path)`.
pub fn load_model<B: Backend>(backend: &B, path: &Path, config: ModelConfig) -> Result<SasRec<B>> {
    if !path.exists() {
        bail!("{} does not exist", path.display());
    }
    let (tensors, _) = load_safetensors(path)?;
    model_from_tensors(backend, tensors, config, path)
}

/// A model of `config` from `tensors` (the `optimizer.` ones of a `last`
/// checkpoint are left out); errors name `path`.
pub fn model_from_tensors<B: Backend>(
    backend: &B,
    tensors: Vec<NamedTensor>,
    config: ModelConfig,
    path: &Path,
) -> Result<SasRec<B>> {
    // Optimiser state lives in the same file for the `last` checkpoints.
    let weights = tensors
        .into_iter()
        .filter(|(name, _, _)| !name.starts_with("optimizer."));
    SasRec::from_weights(backend, config, weights).map_err(|e| {
        anyhow::anyhow!(
            "{} does not fit the run's config.json: {}",
            path.display(),
            bounded(&e, 200)
        )
    })
}

/// The first NaN or infinity in `values`, with its index.
pub fn first_non_finite(values: &[f32]) -> Option<(usize, f32)> {
    values
        .iter()
        .position(|v| !v.is_finite())
        .map(|i| (i, values[i]))
}

/// The little-endian bytes of `data` (safetensors stores little-endian).
fn le_bytes(data: &[f32]) -> Vec<u8> {
    data.iter().flat_map(|v| v.to_le_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<NamedTensor> {
        vec![
            (
                "a.weight".to_string(),
                vec![2, 3],
                vec![1.0, -2.0, 3.5, 0.0, f32::MIN_POSITIVE, 7.25],
            ),
            ("b".to_string(), vec![1], vec![42.0]),
        ]
    }

    #[test]
    fn round_trip_keeps_names_shapes_values_and_metadata() {
        let meta = HashMap::from([("step".to_string(), "12".to_string())]);
        let bytes = to_safetensors(&sample(), meta.clone()).unwrap();
        let (loaded, loaded_meta) = from_safetensors(&bytes, Path::new("w.safetensors")).unwrap();
        assert_eq!(loaded, sample());
        assert_eq!(loaded_meta, meta);
    }

    #[test]
    fn garbage_file_is_a_clear_error() {
        let err = from_safetensors(b"not a tensor file", Path::new("bad.safetensors"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("bad.safetensors") && err.contains("not a valid safetensors"),
            "{err}"
        );
    }

    #[test]
    fn non_finite_values_are_refused_naming_the_tensor() {
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut tensors = sample();
            tensors[0].2[4] = bad;
            let bytes = to_safetensors(&tensors, HashMap::new()).unwrap();
            let err = from_safetensors(&bytes, Path::new("m.safetensors"))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("m.safetensors: tensor a.weight holds")
                    && err.contains(&bad.to_string())
                    && err.contains("element 4 of shape [2, 3]"),
                "{err}"
            );
        }
    }
}
