//! Typed kernel interfaces, checked against the WGSL, and the pipelines
//! built from them.
//!
//! A [`Shader`] is one file of `shaders/`, its parameter type `P` (a
//! `#[repr(C)]` Pod struct, the WGSL's `var<uniform> p: Params` at binding 0),
//! the constants the host injects as `const` lines, and the preludes
//! prepended to it. A [`Kernel`] is one entry point of a shader with its `N`
//! storage buffers, declared once here and checked against the WGSL when the
//! pipelines are built ([`check_interface`]): the entry point must use
//! exactly the declared bindings, each with the declared name and access, and
//! the WGSL `Params` must have the size of `P`. A launcher can only pass a
//! `P` and `N` buffers ([`WgpuBackend::run`](super::device::WgpuBackend)).
//! A kernel's name, `file.wgsl:entry[variant]`, is derived from these.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;

use naga::valid::{Capabilities, ModuleInfo, ValidationFlags, Validator};

use super::error::GpuError;

/// The binding of every shader's `var<uniform> p: Params`.
const PARAMS_BINDING: u32 = 0;

/// How a kernel accesses one storage buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    /// `var<storage, read>`.
    Read,
    /// `var<storage, read_write>`.
    ReadWrite,
}

/// One storage buffer of a kernel: binding number, WGSL variable name, access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Binding {
    pub(crate) binding: u32,
    pub(crate) name: &'static str,
    pub(crate) access: Access,
}

/// A `var<storage, read>` binding.
pub(crate) const fn read(binding: u32, name: &'static str) -> Binding {
    Binding {
        binding,
        name,
        access: Access::Read,
    }
}

/// A `var<storage, read_write>` binding.
pub(crate) const fn read_write(binding: u32, name: &'static str) -> Binding {
    Binding {
        binding,
        name,
        access: Access::ReadWrite,
    }
}

/// Functions shared by every shader.
const COMMON_WGSL: &str = include_str!("../../shaders/common.wgsl");
/// `workgroup_sum` and `workgroup_max`, for the shaders that reduce rows.
pub(crate) const WORKGROUP_REDUCE_WGSL: &str = include_str!("../../shaders/workgroup_reduce.wgsl");
/// The counter-based dropout mask, for the shaders that drop elements.
pub(crate) const DROPOUT_WGSL: &str = include_str!("../../shaders/dropout.wgsl");

/// A WGSL file without its type parameter.
#[derive(Debug)]
pub(crate) struct ShaderSource {
    /// `name.wgsl`.
    pub(crate) file: &'static str,
    body: &'static str,
    /// Preludes (functions only) prepended after common.wgsl.
    preludes: &'static [&'static str],
    /// `(name, value)`, injected as `const name: u32 = value;` lines.
    constants: &'static [(&'static str, u32)],
}

impl ShaderSource {
    /// The text the GPU compiles: the injected constants, common.wgsl, the
    /// preludes, then the file itself.
    pub(crate) fn text(&self) -> String {
        let mut text = String::new();
        for (name, value) in self.constants {
            text.push_str(&format!("const {name}: u32 = {value}u;\n"));
        }
        for part in [COMMON_WGSL]
            .iter()
            .chain(self.preludes)
            .chain([&self.body])
        {
            text.push_str(part);
            text.push('\n');
        }
        text
    }
}

/// A WGSL file whose entry points take parameters of type `P`.
pub(crate) struct Shader<P> {
    pub(crate) source: ShaderSource,
    params: PhantomData<fn(P)>,
}

impl<P> Shader<P> {
    pub(crate) const fn new(
        file: &'static str,
        body: &'static str,
        preludes: &'static [&'static str],
        constants: &'static [(&'static str, u32)],
    ) -> Self {
        Shader {
            source: ShaderSource {
                file,
                body,
                preludes,
                constants,
            },
            params: PhantomData,
        }
    }
}

/// One entry point of a shader with parameters `P` and `N` storage buffers,
/// which a dispatch passes in the order of `buffers`.
pub(crate) struct Kernel<P: 'static, const N: usize> {
    pub(crate) shader: &'static Shader<P>,
    pub(crate) entry: &'static str,
    pub(crate) buffers: [Binding; N],
    /// Pipeline-overridable constants, for variants of one entry point.
    overrides: &'static [(&'static str, f64)],
    /// Names the variant, e.g. `[nt]`; empty without overrides.
    variant: &'static str,
}

impl<P: bytemuck::Pod, const N: usize> Kernel<P, N> {
    pub(crate) const fn new(
        shader: &'static Shader<P>,
        entry: &'static str,
        buffers: [Binding; N],
    ) -> Self {
        Kernel {
            shader,
            entry,
            buffers,
            overrides: &[],
            variant: "",
        }
    }

    /// The same entry point compiled with `overrides`, named `variant`.
    pub(crate) const fn variant(
        self,
        variant: &'static str,
        overrides: &'static [(&'static str, f64)],
    ) -> Self {
        Kernel {
            overrides,
            variant,
            ..self
        }
    }

    /// What the pipelines are built from.
    pub(crate) fn desc(&'static self) -> KernelDesc<'static> {
        KernelDesc {
            shader: &self.shader.source,
            entry: self.entry,
            variant: self.variant,
            buffers: &self.buffers,
            overrides: self.overrides,
            params_size: size_of::<P>(),
        }
    }

    /// The key its pipeline is stored under.
    pub(crate) fn key(&self) -> KernelKey {
        (self.shader.source.file, self.entry, self.variant)
    }
}

/// `(file, entry point, variant)`.
pub(crate) type KernelKey = (&'static str, &'static str, &'static str);

/// A kernel without its types: everything the pipeline and the interface
/// check need.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KernelDesc<'a> {
    pub(crate) shader: &'a ShaderSource,
    pub(crate) entry: &'a str,
    pub(crate) variant: &'a str,
    pub(crate) buffers: &'a [Binding],
    pub(crate) overrides: &'a [(&'static str, f64)],
    pub(crate) params_size: usize,
}

impl KernelDesc<'_> {
    /// `file.wgsl:entry[variant]`, for errors and profiles.
    pub(crate) fn name(&self) -> String {
        format!("{}:{}{}", self.shader.file, self.entry, self.variant)
    }
}

/// A shader parsed and validated by naga, for [`check_interface`].
pub(crate) struct ParsedShader {
    module: naga::Module,
    info: ModuleInfo,
}

/// Parses and validates the text of `source`.
pub(crate) fn parse(source: &ShaderSource) -> Result<ParsedShader, String> {
    let text = source.text();
    let module = naga::front::wgsl::parse_str(&text).map_err(|e| e.emit_to_string(&text))?;
    let info = Validator::new(ValidationFlags::all(), Capabilities::all())
        .validate(&module)
        .map_err(|e| e.emit_to_string(&text))?;
    Ok(ParsedShader { module, info })
}

/// Checks `kernel` against its WGSL: the entry point exists and uses
/// `var<uniform> p` at binding 0, whose type has the size of the Rust
/// params, and exactly the declared storage buffers, each at its binding in
/// group 0 with its name and access. Returns every mismatch found.
pub(crate) fn check_interface(
    shader: &ParsedShader,
    kernel: &KernelDesc<'_>,
) -> Result<(), String> {
    let module = &shader.module;
    let Some(index) = module
        .entry_points
        .iter()
        .position(|ep| ep.name == kernel.entry)
    else {
        return Err(format!("no entry point {}", kernel.entry));
    };
    let used = shader.info.get_entry_point(index);
    let mut problems = Vec::new();
    let mut declared: HashMap<u32, Binding> =
        kernel.buffers.iter().map(|b| (b.binding, *b)).collect();
    if declared.len() != kernel.buffers.len() {
        problems.push("a binding number is declared twice".to_string());
    }
    let mut params_seen = false;
    for (handle, var) in module.global_variables.iter() {
        if used[handle].is_empty() {
            continue;
        }
        let Some(res) = &var.binding else { continue };
        let name = var.name.as_deref().unwrap_or("?");
        if res.group != 0 {
            problems.push(format!("{name} is in group {}, not 0", res.group));
        }
        match var.space {
            naga::AddressSpace::Uniform => {
                params_seen = true;
                if res.binding != PARAMS_BINDING {
                    problems.push(format!(
                        "uniform {name} is at binding {}, not {PARAMS_BINDING}",
                        res.binding
                    ));
                }
                let size = match module.types[var.ty].inner {
                    naga::TypeInner::Struct { span, .. } => span as usize,
                    _ => 0,
                };
                if size != kernel.params_size {
                    problems.push(format!(
                        "the WGSL params are {size} bytes, the Rust params {} bytes",
                        kernel.params_size
                    ));
                }
            }
            naga::AddressSpace::Storage { access } => {
                let wgsl_access = if access.contains(naga::StorageAccess::STORE) {
                    Access::ReadWrite
                } else {
                    Access::Read
                };
                match declared.remove(&res.binding) {
                    None => problems.push(format!(
                        "uses {name} at binding {}, which is not declared",
                        res.binding
                    )),
                    Some(b) => {
                        if b.name != name {
                            problems.push(format!(
                                "binding {} is {name} in the WGSL, declared as {}",
                                res.binding, b.name
                            ));
                        }
                        if b.access != wgsl_access {
                            problems.push(format!(
                                "{name} at binding {} is {wgsl_access:?} in the WGSL, declared {:?}",
                                res.binding, b.access
                            ));
                        }
                    }
                }
            }
            _ => problems.push(format!("{name} has an unsupported address space")),
        }
    }
    if !params_seen {
        problems.push(format!(
            "does not use the params at binding {PARAMS_BINDING}"
        ));
    }
    let mut unused: Vec<&Binding> = declared.values().collect();
    unused.sort_by_key(|b| b.binding);
    for b in unused {
        problems.push(format!(
            "declares {} at binding {}, which the entry point does not use",
            b.name, b.binding
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// A compiled kernel: its pipeline, the layout its bind groups follow and
/// what a dispatch needs to fill them.
pub(crate) struct Pipeline {
    pub(crate) pipeline: wgpu::ComputePipeline,
    pub(crate) layout: wgpu::BindGroupLayout,
    pub(crate) buffers: &'static [Binding],
    pub(crate) params_size: usize,
    pub(crate) name: Arc<str>,
}

/// Every kernel's pipeline, built once when the backend is created.
pub(crate) struct Pipelines {
    by_key: HashMap<KernelKey, Pipeline>,
}

impl Pipelines {
    /// Checks every kernel's interface, compiles every shader file and builds
    /// every pipeline, reporting the first failure with the kernel's name.
    pub(crate) fn build(
        device: &wgpu::Device,
        kernels: &[KernelDesc<'static>],
    ) -> Result<Self, GpuError> {
        let mut modules: HashMap<&'static str, (ParsedShader, wgpu::ShaderModule)> = HashMap::new();
        let mut by_key = HashMap::new();
        for kernel in kernels {
            let file = kernel.shader.file;
            if !modules.contains_key(file) {
                let fail = |message| GpuError::Kernel {
                    kernel: file.to_string(),
                    message,
                };
                let parsed = parse(kernel.shader).map_err(fail)?;
                let module = catch_errors(device, file, || {
                    device.create_shader_module(wgpu::ShaderModuleDescriptor {
                        label: Some(file),
                        source: wgpu::ShaderSource::Wgsl(kernel.shader.text().into()),
                    })
                })?;
                modules.insert(file, (parsed, module));
            }
            let (parsed, module) = &modules[file];
            let name = kernel.name();
            check_interface(parsed, kernel).map_err(|message| GpuError::Kernel {
                kernel: name.clone(),
                message,
            })?;
            let pipeline = catch_errors(device, &name, || {
                build_pipeline(device, module, kernel, &name)
            })?;
            by_key.insert((file, kernel.entry, kernel.variant), pipeline);
        }
        Ok(Pipelines { by_key })
    }

    pub(crate) fn get(&self, key: KernelKey) -> &Pipeline {
        &self.by_key[&key]
    }
}

fn build_pipeline(
    device: &wgpu::Device,
    module: &wgpu::ShaderModule,
    kernel: &KernelDesc<'static>,
    name: &str,
) -> Pipeline {
    let buffer = |binding, ty| wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty,
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    };
    let entries: Vec<wgpu::BindGroupLayoutEntry> =
        std::iter::once(buffer(PARAMS_BINDING, wgpu::BufferBindingType::Uniform))
            .chain(kernel.buffers.iter().map(|b| {
                let read_only = b.access == Access::Read;
                buffer(b.binding, wgpu::BufferBindingType::Storage { read_only })
            }))
            .collect();
    let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: Some(name),
        entries: &entries,
    });
    let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: Some(name),
        bind_group_layouts: &[Some(&layout)],
        immediate_size: 0,
    });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(name),
        layout: Some(&pipeline_layout),
        module,
        entry_point: Some(kernel.entry),
        compilation_options: wgpu::PipelineCompilationOptions {
            constants: kernel.overrides,
            // Every kernel writes its workgroup memory before reading it.
            zero_initialize_workgroup_memory: false,
        },
        cache: None,
    });
    Pipeline {
        pipeline,
        layout,
        buffers: kernel.buffers,
        params_size: kernel.params_size,
        name: Arc::from(name),
    }
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
    use crate::gpu::all_kernels;

    fn layer_norm_forward() -> KernelDesc<'static> {
        all_kernels()
            .into_iter()
            .find(|k| k.name() == "layer_norm.wgsl:forward")
            .expect("layer_norm's forward kernel")
    }

    /// The declarations in Rust and the WGSL agree, for every kernel. (This
    /// needs no GPU: naga parses the shaders on the CPU.)
    #[test]
    fn every_kernel_matches_its_wgsl() {
        for kernel in all_kernels() {
            let parsed = parse(kernel.shader).unwrap_or_else(|e| panic!("{}: {e}", kernel.name()));
            if let Err(e) = check_interface(&parsed, &kernel) {
                panic!("{}: {e}", kernel.name());
            }
        }
    }

    /// A declaration that drifted from the WGSL is rejected, naming what differs.
    #[test]
    fn drifted_declarations_are_rejected() {
        let good = layer_norm_forward();
        let parsed = parse(good.shader).unwrap();
        check_interface(&parsed, &good).expect("the real declaration passes");

        let buffers = good.buffers.to_vec();
        let with = |i: usize, b: Binding| {
            let mut out = buffers.clone();
            out[i] = b;
            out
        };
        let drifts: Vec<(&str, Vec<Binding>, usize, &str)> = vec![
            (
                "binding number",
                with(0, read(4, "x")),
                good.params_size,
                "declares x at binding 4, which the entry point does not use",
            ),
            (
                "name",
                with(1, read(2, "beta")),
                good.params_size,
                "binding 2 is gamma in the WGSL, declared as beta",
            ),
            (
                "access",
                with(0, read_write(1, "x")),
                good.params_size,
                "x at binding 1 is Read in the WGSL, declared ReadWrite",
            ),
            (
                "params size",
                buffers.clone(),
                good.params_size + 4,
                "the WGSL params are 16 bytes, the Rust params 20 bytes",
            ),
            (
                "missing buffer",
                buffers[1..].to_vec(),
                good.params_size,
                "uses x at binding 1, which is not declared",
            ),
            (
                "extra buffer",
                [buffers.clone(), vec![read(7, "partial")]].concat(),
                good.params_size,
                "declares partial at binding 7, which the entry point does not use",
            ),
        ];
        for (what, buffers, params_size, expected) in drifts {
            let drifted = KernelDesc {
                buffers: &buffers,
                params_size,
                ..good
            };
            let err = check_interface(&parsed, &drifted)
                .expect_err(&format!("a drifted {what} is rejected"));
            assert!(err.contains(expected), "{what}: {err}");
        }
        let missing = KernelDesc {
            entry: "no_such_entry",
            ..good
        };
        let err = check_interface(&parsed, &missing).unwrap_err();
        assert!(err.contains("no entry point no_such_entry"), "{err}");
    }

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

        let broken = ShaderSource {
            body: "fn oops( {",
            ..*layer_norm_forward().shader
        };
        let err = parse(&broken)
            .err()
            .expect("naga rejects it before the GPU sees it");
        assert!(err.contains("oops") || err.contains("expected"), "{err}");
    }
}
