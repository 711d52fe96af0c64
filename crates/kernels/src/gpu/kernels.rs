//! The compute kernels: which WGSL file and entry point each one is, its
//! bindings, and the pipelines built from them once per device.

use std::collections::HashMap;

use super::GpuError;

/// How a kernel sees one binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    /// The kernel's parameters (`var<uniform> p: Params`).
    Params,
    /// `var<storage, read>`.
    Read,
    /// `var<storage, read_write>`.
    ReadWrite,
}

use Access::{Params, Read, ReadWrite};

/// Every compute kernel. The buffers a dispatch passes follow the order of
/// the non-params entries of [`Kernel::bindings`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Kernel {
    /// a, b -> out
    Add,
    /// b -> acc (in place)
    AddAssign,
    /// x, s -> out
    Scale,
    /// x -> out
    Relu,
    /// y, dy -> dx
    ReluBackward,
    /// x -> out
    Dropout,
    /// a, b, bias -> c (or split-K partials)
    Matmul { trans_a: bool, trans_b: bool },
    /// split-K partials, bias -> c
    MatmulSplitSum,
    /// x -> partial column sums
    ColumnSum,
    /// x, gamma, beta -> stats, y
    LayerNorm,
    /// x, gamma, dy, stats -> dx
    LayerNormBackward,
    /// x, dy, stats -> partial dgamma and dbeta
    LayerNormParamGrads,
    /// table, ids -> rows
    Gather,
    /// dy, distinct ids, row_ptr, positions -> dtable
    ScatterAdd,
    /// qkv, key_ids -> probs, ctx
    AttentionForward,
    /// qkv, dctx, probs -> dscores, dqkv (query part)
    AttentionBackwardQuery,
    /// qkv, dctx, probs, dscores -> dqkv (key and value parts)
    AttentionBackwardKey,
    /// logits (in place: dlogits), targets -> per-row losses
    CrossEntropyRows,
    /// per-row losses -> mean loss
    MeanLoss,
    /// grad -> param, m, v (in place)
    Adam,
}

const DROPOUT_WGSL: &str = include_str!("../../shaders/dropout.wgsl");

/// Shader sources by file name; dropout.wgsl holds functions only and is
/// prepended to the families that drop elements.
fn source(file: &str) -> String {
    let body = match file {
        "elementwise.wgsl" => include_str!("../../shaders/elementwise.wgsl"),
        "matmul.wgsl" => include_str!("../../shaders/matmul.wgsl"),
        "reduce.wgsl" => include_str!("../../shaders/reduce.wgsl"),
        "layernorm.wgsl" => include_str!("../../shaders/layernorm.wgsl"),
        "embedding.wgsl" => include_str!("../../shaders/embedding.wgsl"),
        "attention.wgsl" => include_str!("../../shaders/attention.wgsl"),
        "cross_entropy.wgsl" => include_str!("../../shaders/cross_entropy.wgsl"),
        "adam.wgsl" => include_str!("../../shaders/adam.wgsl"),
        other => unreachable!("no shader file {other}"),
    };
    if file == "elementwise.wgsl" || file == "attention.wgsl" {
        format!("{DROPOUT_WGSL}\n{body}")
    } else {
        body.to_string()
    }
}

impl Kernel {
    /// Every kernel, each matmul transposition included.
    pub(crate) fn all() -> Vec<Kernel> {
        let mut all = vec![
            Kernel::Add,
            Kernel::AddAssign,
            Kernel::Scale,
            Kernel::Relu,
            Kernel::ReluBackward,
            Kernel::Dropout,
            Kernel::MatmulSplitSum,
            Kernel::ColumnSum,
            Kernel::LayerNorm,
            Kernel::LayerNormBackward,
            Kernel::LayerNormParamGrads,
            Kernel::Gather,
            Kernel::ScatterAdd,
            Kernel::AttentionForward,
            Kernel::AttentionBackwardQuery,
            Kernel::AttentionBackwardKey,
            Kernel::CrossEntropyRows,
            Kernel::MeanLoss,
            Kernel::Adam,
        ];
        for trans_a in [false, true] {
            for trans_b in [false, true] {
                all.push(Kernel::Matmul { trans_a, trans_b });
            }
        }
        all
    }

    /// The WGSL file and entry point.
    pub(crate) fn file_and_entry(self) -> (&'static str, &'static str) {
        match self {
            Kernel::Add => ("elementwise.wgsl", "add"),
            Kernel::AddAssign => ("elementwise.wgsl", "add_assign"),
            Kernel::Scale => ("elementwise.wgsl", "scale"),
            Kernel::Relu => ("elementwise.wgsl", "relu"),
            Kernel::ReluBackward => ("elementwise.wgsl", "relu_backward"),
            Kernel::Dropout => ("elementwise.wgsl", "dropout"),
            Kernel::Matmul { .. } => ("matmul.wgsl", "matmul"),
            Kernel::MatmulSplitSum => ("matmul.wgsl", "split_k_sum"),
            Kernel::ColumnSum => ("reduce.wgsl", "column_sum"),
            Kernel::LayerNorm => ("layernorm.wgsl", "forward"),
            Kernel::LayerNormBackward => ("layernorm.wgsl", "backward"),
            Kernel::LayerNormParamGrads => ("layernorm.wgsl", "param_grads"),
            Kernel::Gather => ("embedding.wgsl", "gather"),
            Kernel::ScatterAdd => ("embedding.wgsl", "scatter_add"),
            Kernel::AttentionForward => ("attention.wgsl", "forward"),
            Kernel::AttentionBackwardQuery => ("attention.wgsl", "backward_query"),
            Kernel::AttentionBackwardKey => ("attention.wgsl", "backward_key"),
            Kernel::CrossEntropyRows => ("cross_entropy.wgsl", "rows"),
            Kernel::MeanLoss => ("cross_entropy.wgsl", "mean_loss"),
            Kernel::Adam => ("adam.wgsl", "step"),
        }
    }

    /// A name for errors and profiles, e.g. `matmul.wgsl:matmul[tn]`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kernel::Add => "elementwise.wgsl:add",
            Kernel::AddAssign => "elementwise.wgsl:add_assign",
            Kernel::Scale => "elementwise.wgsl:scale",
            Kernel::Relu => "elementwise.wgsl:relu",
            Kernel::ReluBackward => "elementwise.wgsl:relu_backward",
            Kernel::Dropout => "elementwise.wgsl:dropout",
            Kernel::Matmul {
                trans_a: false,
                trans_b: false,
            } => "matmul.wgsl:matmul[nn]",
            Kernel::Matmul {
                trans_a: false,
                trans_b: true,
            } => "matmul.wgsl:matmul[nt]",
            Kernel::Matmul {
                trans_a: true,
                trans_b: false,
            } => "matmul.wgsl:matmul[tn]",
            Kernel::Matmul {
                trans_a: true,
                trans_b: true,
            } => "matmul.wgsl:matmul[tt]",
            Kernel::MatmulSplitSum => "matmul.wgsl:split_k_sum",
            Kernel::ColumnSum => "reduce.wgsl:column_sum",
            Kernel::LayerNorm => "layernorm.wgsl:forward",
            Kernel::LayerNormBackward => "layernorm.wgsl:backward",
            Kernel::LayerNormParamGrads => "layernorm.wgsl:param_grads",
            Kernel::Gather => "embedding.wgsl:gather",
            Kernel::ScatterAdd => "embedding.wgsl:scatter_add",
            Kernel::AttentionForward => "attention.wgsl:forward",
            Kernel::AttentionBackwardQuery => "attention.wgsl:backward_query",
            Kernel::AttentionBackwardKey => "attention.wgsl:backward_key",
            Kernel::CrossEntropyRows => "cross_entropy.wgsl:rows",
            Kernel::MeanLoss => "cross_entropy.wgsl:mean_loss",
            Kernel::Adam => "adam.wgsl:step",
        }
    }

    /// `(binding number, access)` of every binding the entry point uses.
    pub(crate) fn bindings(self) -> &'static [(u32, Access)] {
        match self {
            Kernel::Add | Kernel::Scale | Kernel::ReluBackward => {
                &[(0, Params), (1, Read), (2, Read), (3, ReadWrite)]
            }
            Kernel::AddAssign => &[(0, Params), (2, Read), (3, ReadWrite)],
            Kernel::Relu | Kernel::Dropout => &[(0, Params), (1, Read), (3, ReadWrite)],
            Kernel::Matmul { .. } => {
                &[(0, Params), (1, Read), (2, Read), (3, Read), (4, ReadWrite)]
            }
            Kernel::MatmulSplitSum => &[(5, Params), (6, Read), (3, Read), (4, ReadWrite)],
            Kernel::ColumnSum => &[(0, Params), (1, Read), (2, ReadWrite)],
            Kernel::LayerNorm => &[
                (0, Params),
                (1, Read),
                (2, Read),
                (3, Read),
                (5, ReadWrite),
                (6, ReadWrite),
            ],
            Kernel::LayerNormBackward => &[
                (0, Params),
                (1, Read),
                (2, Read),
                (4, Read),
                (8, Read),
                (6, ReadWrite),
            ],
            Kernel::LayerNormParamGrads => {
                &[(0, Params), (1, Read), (4, Read), (8, Read), (7, ReadWrite)]
            }
            Kernel::Gather => &[(0, Params), (1, Read), (2, Read), (3, ReadWrite)],
            Kernel::ScatterAdd => &[
                (4, Params),
                (5, Read),
                (6, Read),
                (7, Read),
                (8, Read),
                (9, ReadWrite),
            ],
            Kernel::AttentionForward => &[
                (0, Params),
                (1, Read),
                (2, Read),
                (3, ReadWrite),
                (4, ReadWrite),
            ],
            Kernel::AttentionBackwardQuery => &[
                (0, Params),
                (1, Read),
                (5, Read),
                (6, Read),
                (7, ReadWrite),
                (9, ReadWrite),
            ],
            Kernel::AttentionBackwardKey => &[
                (0, Params),
                (1, Read),
                (5, Read),
                (6, Read),
                (8, Read),
                (9, ReadWrite),
            ],
            Kernel::CrossEntropyRows => &[(0, Params), (1, ReadWrite), (2, Read), (3, ReadWrite)],
            Kernel::MeanLoss => &[(0, Params), (4, Read), (5, ReadWrite)],
            Kernel::Adam => &[
                (0, Params),
                (1, Read),
                (2, ReadWrite),
                (3, ReadWrite),
                (4, ReadWrite),
            ],
        }
    }

    /// Pipeline-overridable constants.
    fn constants(self) -> Vec<(&'static str, f64)> {
        match self {
            Kernel::Matmul { trans_a, trans_b } => vec![
                ("TRANS_A", f64::from(u8::from(trans_a))),
                ("TRANS_B", f64::from(u8::from(trans_b))),
            ],
            _ => Vec::new(),
        }
    }
}

/// A compiled kernel: its pipeline and the layout its bind groups follow.
pub(crate) struct Pipeline {
    pub(crate) pipeline: wgpu::ComputePipeline,
    pub(crate) layout: wgpu::BindGroupLayout,
}

/// Every kernel's pipeline, built once when the backend is created.
pub(crate) struct Pipelines {
    by_kernel: HashMap<Kernel, Pipeline>,
}

impl Pipelines {
    /// Compiles every shader file and builds every pipeline, reporting the
    /// first failure with the kernel's file and entry point.
    pub(crate) fn build(device: &wgpu::Device) -> Result<Self, GpuError> {
        let mut modules: HashMap<&'static str, wgpu::ShaderModule> = HashMap::new();
        let mut by_kernel = HashMap::new();
        for kernel in Kernel::all() {
            let (file, entry) = kernel.file_and_entry();
            if !modules.contains_key(file) {
                let module = catch_errors(device, file, || {
                    device.create_shader_module(wgpu::ShaderModuleDescriptor {
                        label: Some(file),
                        source: wgpu::ShaderSource::Wgsl(source(file).into()),
                    })
                })?;
                modules.insert(file, module);
            }
            let module = &modules[file];
            let pipeline = catch_errors(device, kernel.name(), || {
                build_pipeline(device, module, kernel, entry)
            })?;
            by_kernel.insert(kernel, pipeline);
        }
        Ok(Pipelines { by_kernel })
    }

    pub(crate) fn get(&self, kernel: Kernel) -> &Pipeline {
        &self.by_kernel[&kernel]
    }
}

fn build_pipeline(
    device: &wgpu::Device,
    module: &wgpu::ShaderModule,
    kernel: Kernel,
    entry: &str,
) -> Pipeline {
    let entries: Vec<wgpu::BindGroupLayoutEntry> = kernel
        .bindings()
        .iter()
        .map(|&(binding, access)| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: match access {
                    Params => wgpu::BufferBindingType::Uniform,
                    Read => wgpu::BufferBindingType::Storage { read_only: true },
                    ReadWrite => wgpu::BufferBindingType::Storage { read_only: false },
                },
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        })
        .collect();
    let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: Some(kernel.name()),
        entries: &entries,
    });
    let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: Some(kernel.name()),
        bind_group_layouts: &[Some(&layout)],
        immediate_size: 0,
    });
    let constants = kernel.constants();
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(kernel.name()),
        layout: Some(&pipeline_layout),
        module,
        entry_point: Some(entry),
        compilation_options: wgpu::PipelineCompilationOptions {
            constants: &constants,
            // Every kernel writes its workgroup memory before reading it.
            zero_initialize_workgroup_memory: false,
        },
        cache: None,
    });
    Pipeline { pipeline, layout }
}

/// Runs `create` inside validation and internal error scopes and turns a
/// captured error into a [`GpuError::Kernel`] naming `what`.
fn catch_errors<T>(
    device: &wgpu::Device,
    what: &str,
    create: impl FnOnce() -> T,
) -> Result<T, GpuError> {
    let internal = device.push_error_scope(wgpu::ErrorFilter::Internal);
    let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let value = create();
    let validation_error = pollster::block_on(validation.pop());
    let internal_error = pollster::block_on(internal.pop());
    match validation_error.or(internal_error) {
        None => Ok(value),
        Some(error) => Err(GpuError::Kernel {
            kernel: what.to_string(),
            message: error.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_errors_name_the_kernel() {
        let Some(backend) = crate::gpu::test_backend() else {
            return;
        };
        let device = &backend.inner.device;
        let err = catch_errors(device, "broken.wgsl", || {
            device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some("broken.wgsl"),
                source: wgpu::ShaderSource::Wgsl("fn oops( {".into()),
            })
        })
        .expect_err("a syntax error is caught");
        assert!(err.to_string().contains("broken.wgsl"), "{err}");

        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("adam.wgsl"),
            source: wgpu::ShaderSource::Wgsl(source("adam.wgsl").into()),
        });
        let err = catch_errors(device, "adam.wgsl:no_such_entry", || {
            build_pipeline(device, &module, Kernel::Adam, "no_such_entry")
        })
        .err()
        .expect("a missing entry point is caught");
        assert!(err.to_string().contains("adam.wgsl:no_such_entry"), "{err}");
    }
}
