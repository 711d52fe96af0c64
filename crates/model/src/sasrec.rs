//! The SASRec model: the notebook's embeddings, pre-LayerNorm Transformer
//! encoder and tied output layer, written over the autograd tape, with
//! options (`ModelOptions`): RMSNorm, a SwiGLU feed-forward block, gated
//! residual branches (eSASRec's LiGR layers), an untied output layer and
//! rotary position embedding of the queries and keys.

use std::collections::HashMap;

use sasrec_autograd::init::{self, Init};
use sasrec_autograd::{ParamId, ParamStore, Tape, Var};
use sasrec_kernels::rotary::rotary_table;
use sasrec_kernels::{AttentionShape, Backend, Dropout};

use crate::config::{FeedForward, ModelConfig, Norm, OutputLayer};
use crate::sampler::StepNegatives;

/// LayerNorm epsilon (PyTorch's default).
pub const LAYER_NORM_EPS: f32 = 1e-5;

/// RMSNorm epsilon (LLaMA's and RecBole's).
pub const RMS_NORM_EPS: f32 = 1e-6;

/// Parameter ids of a norm: a scale, and a bias for LayerNorm.
#[derive(Clone, Copy, Debug)]
struct NormParams {
    weight: ParamId,
    bias: Option<ParamId>,
}

/// Parameter ids of one encoder layer. The biases of the feed-forward block
/// and the gates exist only with the options that have them.
#[derive(Clone, Debug)]
struct LayerParams {
    norm1: NormParams,
    in_proj_weight: ParamId,
    in_proj_bias: ParamId,
    out_proj_weight: ParamId,
    out_proj_bias: ParamId,
    norm2: NormParams,
    linear1_weight: ParamId,
    linear1_bias: Option<ParamId>,
    linear2_weight: ParamId,
    linear2_bias: Option<ParamId>,
    /// SwiGLU's up projection.
    linear3_weight: Option<ParamId>,
    /// The gates of the attention and feed-forward branches, `(weight, bias)`.
    gates: Option<[(ParamId, ParamId); 2]>,
}

/// Where dropout is applied, numbered so that every site draws its own mask.
fn dropout_site(layer: usize, offset: u32) -> u32 {
    1 + 4 * layer as u32 + offset
}
const SITE_EMBEDDING: u32 = 0;
const SITE_ATTENTION: u32 = 0;
const SITE_ATTENTION_OUT: u32 = 1;
const SITE_FF_HIDDEN: u32 = 2;
const SITE_FF_OUT: u32 = 3;

/// Training-mode randomness of one forward pass: dropout masks are a function
/// of `(seed, step, site)`.
#[derive(Clone, Copy, Debug)]
pub struct DropoutContext {
    /// The run's seed.
    pub seed: u64,
    /// The optimiser step (1-based) this forward belongs to.
    pub step: u64,
}

/// A batch on the device: `batch` sequences of `max_len` input ids and the
/// next-item targets (0 = ignored), row-major.
pub struct DeviceBatch<B: Backend> {
    /// Input item ids, `[batch * max_len]`.
    pub inputs: B::Ids,
    /// Target item ids, `[batch * max_len]`.
    pub targets: B::Ids,
    /// Position of every input, `0..max_len` repeated `batch` times.
    pub positions: B::Ids,
    /// Number of sequences.
    pub batch: usize,
}

impl<B: Backend> DeviceBatch<B> {
    /// Uploads row-major `inputs` and `targets` of `batch` sequences of `max_len`.
    pub fn upload(
        backend: &B,
        inputs: &[u32],
        targets: &[u32],
        batch: usize,
        max_len: usize,
    ) -> Self {
        assert_eq!(
            inputs.len(),
            batch * max_len,
            "inputs are not batch * max_len"
        );
        assert_eq!(
            targets.len(),
            batch * max_len,
            "targets are not batch * max_len"
        );
        let positions: Vec<u32> = (0..batch).flat_map(|_| 0..max_len as u32).collect();
        DeviceBatch {
            inputs: backend.ids(inputs),
            targets: backend.ids(targets),
            positions: backend.ids(&positions),
            batch,
        }
    }
}

/// What [`SasRec::infer`] returns.
#[derive(Clone, Debug)]
pub struct Inference {
    /// Mean loss over the non-zero targets (0 when there are none).
    pub loss: f32,
    /// Number of non-zero targets.
    pub targets: usize,
    /// Last-position scores `[batch, vocab]`, when asked for.
    pub scores: Option<Vec<f32>>,
}

/// SASRec with its parameters on a backend.
pub struct SasRec<B: Backend> {
    /// Sizes.
    pub config: ModelConfig,
    /// Every weight, named as in the notebook's PyTorch `state_dict`.
    pub params: ParamStore<B>,
    item_embedding: ParamId,
    position_embedding: ParamId,
    layers: Vec<LayerParams>,
    final_norm: NormParams,
    /// The output layer's table: the item table, or one of its own.
    output_embedding: ParamId,
    /// The cosines and sines of the rotary embedding, `[max_len, head_dim]`,
    /// with that option.
    rotary_table: Option<B::Tensor>,
}

/// The name and shape of every parameter, in `state_dict` order.
///
/// The notebook's model is `nn.TransformerEncoder`'s names. The options add
/// or drop parameters under names of the same style: RMSNorm has no
/// `.bias`; SwiGLU has `linear1` (gate), `linear3` (up) and `linear2`
/// (down), without biases; the gated residual adds `gate1` (attention
/// branch) and `gate2` (feed-forward branch); the untied output layer adds
/// `output_embedding.weight` after the final norm.
pub fn parameter_shapes(config: &ModelConfig) -> Vec<(String, Vec<usize>)> {
    let (d, f) = (config.dim, config.ff_dim);
    let o = config.options;
    let rms = o.norm == Norm::Rms;
    let swiglu = o.feed_forward == FeedForward::Swiglu;
    let mut shapes = vec![
        ("item_embedding.weight".to_string(), vec![config.vocab(), d]),
        (
            "position_embedding.weight".to_string(),
            vec![config.max_len, d],
        ),
    ];
    for i in 0..config.layers {
        let p = format!("transformer_encoder.layers.{i}");
        let mut layer = vec![
            (format!("{p}.self_attn.in_proj_weight"), vec![3 * d, d]),
            (format!("{p}.self_attn.in_proj_bias"), vec![3 * d]),
            (format!("{p}.self_attn.out_proj.weight"), vec![d, d]),
            (format!("{p}.self_attn.out_proj.bias"), vec![d]),
            (format!("{p}.linear1.weight"), vec![f, d]),
            (format!("{p}.linear1.bias"), vec![f]),
            (format!("{p}.linear2.weight"), vec![d, f]),
            (format!("{p}.linear2.bias"), vec![d]),
            (format!("{p}.linear3.weight"), vec![f, d]),
            (format!("{p}.norm1.weight"), vec![d]),
            (format!("{p}.norm1.bias"), vec![d]),
            (format!("{p}.norm2.weight"), vec![d]),
            (format!("{p}.norm2.bias"), vec![d]),
            (format!("{p}.gate1.weight"), vec![d, d]),
            (format!("{p}.gate1.bias"), vec![d]),
            (format!("{p}.gate2.weight"), vec![d, d]),
            (format!("{p}.gate2.bias"), vec![d]),
        ];
        layer.retain(|(name, _)| {
            let within = &name[p.len() + 1..];
            match within {
                "linear1.bias" | "linear2.bias" => !swiglu,
                "linear3.weight" => swiglu,
                "norm1.bias" | "norm2.bias" => !rms,
                _ if within.starts_with("gate") => o.gated_residual,
                _ => true,
            }
        });
        shapes.extend(layer);
    }
    shapes.push(("layer_norm.weight".to_string(), vec![d]));
    if !rms {
        shapes.push(("layer_norm.bias".to_string(), vec![d]));
    }
    if o.output_layer == OutputLayer::Untied {
        shapes.push((
            "output_embedding.weight".to_string(),
            vec![config.vocab(), d],
        ));
    }
    shapes
}

/// Prefix of the parameters of encoder layer `i`.
fn layer_prefix(i: usize) -> String {
    format!("transformer_encoder.layers.{i}.")
}

/// How PyTorch initialises the notebook's parameter called `name`:
///
/// - `item_embedding`, `position_embedding`, `in_proj_weight`: xavier-uniform
///   (the notebook's `_init_weights`, and `nn.MultiheadAttention`'s own).
/// - `out_proj.weight`, `linear1.weight`, `linear2.weight`: `nn.Linear`'s
///   default, kaiming-uniform with a = sqrt(5), i.e. U(±1/sqrt(fan_in)); the
///   biases of `linear1` and `linear2` U(±1/sqrt(fan_in)).
/// - `in_proj_bias` and `out_proj.bias`: 0 (`nn.MultiheadAttention`).
/// - LayerNorm (and RMSNorm) weights 1, biases 0.
/// - The options' parameters as their PyTorch modules: `linear3` and the
///   gates `nn.Linear`'s default; `output_embedding` xavier-uniform like the
///   item table.
///
/// # Panics
/// For a name that is not a parameter of the model.
fn init_of(name: &str, config: &ModelConfig) -> Init {
    let within_layer = (0..config.layers)
        .find_map(|i| name.strip_prefix(&layer_prefix(i)))
        .unwrap_or(name);
    match within_layer {
        "item_embedding.weight"
        | "position_embedding.weight"
        | "output_embedding.weight"
        | "self_attn.in_proj_weight" => Init::XavierUniform { gain: 1.0 },
        "self_attn.out_proj.weight"
        | "linear1.weight"
        | "linear2.weight"
        | "linear3.weight"
        | "gate1.weight"
        | "gate2.weight" => Init::LINEAR_WEIGHT,
        "linear1.bias" | "gate1.bias" | "gate2.bias" => Init::linear_bias(config.dim),
        "linear2.bias" => Init::linear_bias(config.ff_dim),
        "self_attn.in_proj_bias" | "self_attn.out_proj.bias" => Init::Zeros,
        "norm1.weight" | "norm2.weight" | "layer_norm.weight" => Init::Ones,
        "norm1.bias" | "norm2.bias" | "layer_norm.bias" => Init::Zeros,
        other => panic!("no initialisation for parameter {other}"),
    }
}

/// Draws initial weights as PyTorch does for the notebook's model, each by
/// its name (see `init_of`), in `state_dict` order.
///
/// `nn.TransformerEncoder` deep-copies one initialised layer, so every layer
/// starts from the same weights; so do we: layer 0 is drawn first (its
/// parameters in `state_dict` order), then the other parameters, and the
/// other layers copy layer 0. A seed gives the same weights as in every
/// earlier release.
pub fn initial_weights(config: &ModelConfig, seed: u64) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut rng = init::seeded(seed);
    let shapes = parameter_shapes(config);
    let first_layer = layer_prefix(0);
    let in_a_layer = |name: &str| name.starts_with("transformer_encoder.layers.");
    let draw_order = shapes
        .iter()
        .filter(|(name, _)| name.starts_with(&first_layer))
        .chain(shapes.iter().filter(|(name, _)| !in_a_layer(name)));
    let mut drawn: HashMap<&str, Vec<f32>> = HashMap::new();
    for (name, shape) in draw_order {
        drawn.insert(name, init_of(name, config).values(shape, &mut rng));
    }
    shapes
        .iter()
        .map(|(name, shape)| {
            let source = match name.strip_prefix("transformer_encoder.layers.") {
                Some(rest) => {
                    let (_, within_layer) = rest.split_once('.').expect("layer.param");
                    format!("{first_layer}{within_layer}")
                }
                None => name.clone(),
            };
            (name.clone(), shape.clone(), drawn[source.as_str()].clone())
        })
        .collect()
}

impl<B: Backend> SasRec<B> {
    /// A freshly initialised model (see [`initial_weights`]).
    pub fn new(backend: &B, config: ModelConfig, seed: u64) -> Self {
        let weights = initial_weights(&config, seed);
        Self::from_weights(backend, config, weights)
            .expect("initial weights match their own shapes")
    }

    /// A model from named weights `(name, shape, values)`: exactly the
    /// parameters of [`parameter_shapes`], in any order.
    pub fn from_weights(
        backend: &B,
        config: ModelConfig,
        weights: impl IntoIterator<Item = (String, Vec<usize>, Vec<f32>)>,
    ) -> Result<Self, String> {
        config.validate().map_err(|e| e.to_string())?;
        let mut given: HashMap<String, (Vec<usize>, Vec<f32>)> = weights
            .into_iter()
            .map(|(name, shape, data)| (name, (shape, data)))
            .collect();
        let mut params = ParamStore::new();
        for (name, shape) in parameter_shapes(&config) {
            let (given_shape, data) = given
                .remove(&name)
                .ok_or_else(|| format!("missing weight {name}"))?;
            if given_shape != shape {
                return Err(format!(
                    "weight {name} has shape {given_shape:?}, the config needs {shape:?}"
                ));
            }
            assert_eq!(
                data.len(),
                shape.iter().product::<usize>(),
                "weight {name}: data does not fill its shape"
            );
            params.add(name, backend.tensor(&data, &shape));
        }
        if let Some(extra) = given.keys().min() {
            return Err(format!(
                "unexpected weight {extra} (not part of this model)"
            ));
        }
        let id = |name: &str| params.find(name).expect("every parameter was just added");
        let norm = |prefix: &str| NormParams {
            weight: id(&format!("{prefix}.weight")),
            bias: params.find(&format!("{prefix}.bias")),
        };
        let layers = (0..config.layers)
            .map(|i| {
                let name = |s: &str| format!("transformer_encoder.layers.{i}.{s}");
                let p = |s: &str| id(&name(s));
                let maybe = |s: &str| params.find(&name(s));
                LayerParams {
                    norm1: norm(&name("norm1")),
                    in_proj_weight: p("self_attn.in_proj_weight"),
                    in_proj_bias: p("self_attn.in_proj_bias"),
                    out_proj_weight: p("self_attn.out_proj.weight"),
                    out_proj_bias: p("self_attn.out_proj.bias"),
                    norm2: norm(&name("norm2")),
                    linear1_weight: p("linear1.weight"),
                    linear1_bias: maybe("linear1.bias"),
                    linear2_weight: p("linear2.weight"),
                    linear2_bias: maybe("linear2.bias"),
                    linear3_weight: maybe("linear3.weight"),
                    gates: config.options.gated_residual.then(|| {
                        [
                            (p("gate1.weight"), p("gate1.bias")),
                            (p("gate2.weight"), p("gate2.bias")),
                        ]
                    }),
                }
            })
            .collect();
        let item_embedding = id("item_embedding.weight");
        let head_dim = config.dim / config.heads;
        let rotary_table = config.options.rotary.then(|| {
            let table = rotary_table(config.max_len, head_dim);
            backend.tensor(&table, &[config.max_len, head_dim])
        });
        Ok(SasRec {
            item_embedding,
            position_embedding: id("position_embedding.weight"),
            final_norm: norm("layer_norm"),
            output_embedding: params
                .find("output_embedding.weight")
                .unwrap_or(item_embedding),
            layers,
            rotary_table,
            params,
            config,
        })
    }

    /// The encoder output after the final LayerNorm, `[batch * max_len, dim]`.
    ///
    /// `vars` are the parameters on `tape` ([`Tape::params`]); `dropout` is
    /// `Some` in training mode.
    pub fn hidden(
        &self,
        tape: &mut Tape<'_, B>,
        vars: &[Var],
        batch: &DeviceBatch<B>,
        dropout: Option<DropoutContext>,
    ) -> Var {
        self.encode(tape, vars, batch, dropout, None)
    }

    /// The encoder output at the last position of each sequence, after the
    /// final LayerNorm, `[batch, dim]`, in inference mode: the rows of
    /// [`SasRec::hidden`] at positions `max_len - 1`, for less work. The last
    /// layer needs the other positions only as keys and values of its
    /// attention, so from its attention's output on it runs on the last
    /// positions alone (at the notebook's sizes about a third of the
    /// encoder's work is skipped).
    pub fn last_hidden(&self, tape: &mut Tape<'_, B>, vars: &[Var], batch: &DeviceBatch<B>) -> Var {
        let last = tape.backend().ids(&self.last_rows(batch.batch));
        self.encode(tape, vars, batch, None, Some(&last))
    }

    /// The row of each sequence's last position in `[batch * max_len, _]`.
    fn last_rows(&self, batch: usize) -> Vec<u32> {
        let len = self.config.max_len;
        (1..=batch).map(|b| (b * len - 1) as u32).collect()
    }

    /// The encoder: every position's output, or with `last_rows` only those
    /// rows' (taken from the last layer's attention output on).
    fn encode(
        &self,
        tape: &mut Tape<'_, B>,
        vars: &[Var],
        batch: &DeviceBatch<B>,
        dropout: Option<DropoutContext>,
        last_rows: Option<&B::Ids>,
    ) -> Var {
        let c = &self.config;
        let v = |id: ParamId| vars[id.index()];
        let mask = |site: u32| dropout.map(|ctx| Dropout::new(c.dropout, ctx.seed, ctx.step, site));
        let shape = AttentionShape {
            batch: batch.batch,
            len: c.max_len,
            heads: c.heads,
            head_dim: c.dim / c.heads,
        };

        let items = tape.embedding(v(self.item_embedding), &batch.inputs, Some(0));
        let positions = tape.embedding(v(self.position_embedding), &batch.positions, None);
        let mut x = tape.add(items, positions);
        x = tape.dropout(x, mask(SITE_EMBEDDING));

        let norm = |tape: &mut Tape<'_, B>, x: Var, p: NormParams| match p.bias {
            Some(bias) => tape.layer_norm(x, v(p.weight), v(bias), LAYER_NORM_EPS),
            None => tape.rms_norm(x, v(p.weight), RMS_NORM_EPS),
        };
        // x + branch, or x + sigmoid(W x + b) * branch with a gate.
        let residual =
            |tape: &mut Tape<'_, B>, x: Var, branch: Var, gate: Option<(ParamId, ParamId)>| {
                let branch = match gate {
                    Some((w, b)) => {
                        let g = tape.linear(x, v(w), Some(v(b)));
                        let g = tape.sigmoid(g);
                        tape.mul(g, branch)
                    }
                    None => branch,
                };
                tape.add(x, branch)
            };

        for (i, layer) in self.layers.iter().enumerate() {
            let [gate1, gate2] = layer.gates.map_or([None, None], |g| g.map(Some));
            // x = x + Drop(MHA(N1(x))), the branch gated when asked
            let h = norm(tape, x, layer.norm1);
            let mut qkv = tape.linear(h, v(layer.in_proj_weight), Some(v(layer.in_proj_bias)));
            if let Some(table) = &self.rotary_table {
                qkv = tape.rotary(qkv, table, shape);
            }
            let mut ctx = tape.attention(
                qkv,
                &batch.inputs,
                shape,
                mask(dropout_site(i, SITE_ATTENTION)),
            );
            if let Some(rows) = last_rows.filter(|_| i + 1 == self.layers.len()) {
                ctx = tape.embedding(ctx, rows, None);
                x = tape.embedding(x, rows, None);
            }
            let attn = tape.linear(ctx, v(layer.out_proj_weight), Some(v(layer.out_proj_bias)));
            let attn = tape.dropout(attn, mask(dropout_site(i, SITE_ATTENTION_OUT)));
            x = residual(tape, x, attn, gate1);

            // x = x + Drop(W2 Drop(relu(W1 N2(x) + b1)) + b2), or with
            // SwiGLU x + Drop(W2 Drop(silu(W1 N2(x)) * W3 N2(x)))
            let h = norm(tape, x, layer.norm2);
            let hidden = tape.linear(h, v(layer.linear1_weight), layer.linear1_bias.map(v));
            let hidden = match layer.linear3_weight {
                Some(w3) => {
                    let up = tape.linear(h, v(w3), None);
                    tape.swiglu(hidden, up)
                }
                None => tape.relu(hidden),
            };
            let hidden = tape.dropout(hidden, mask(dropout_site(i, SITE_FF_HIDDEN)));
            let ff = tape.linear(hidden, v(layer.linear2_weight), layer.linear2_bias.map(v));
            let ff = tape.dropout(ff, mask(dropout_site(i, SITE_FF_OUT)));
            x = residual(tape, x, ff, gate2);
        }
        norm(tape, x, self.final_norm)
    }

    /// Mean next-item cross-entropy over the batch's non-zero targets, `[1]`.
    pub fn loss(
        &self,
        tape: &mut Tape<'_, B>,
        vars: &[Var],
        batch: &DeviceBatch<B>,
        dropout: Option<DropoutContext>,
    ) -> Var {
        self.smoothed_loss(tape, vars, batch, dropout, 0.0)
    }

    /// [`SasRec::loss`] with label smoothing in `[0, 1)`.
    pub fn smoothed_loss(
        &self,
        tape: &mut Tape<'_, B>,
        vars: &[Var],
        batch: &DeviceBatch<B>,
        dropout: Option<DropoutContext>,
        smoothing: f32,
    ) -> Var {
        let h = self.hidden(tape, vars, batch, dropout);
        let table = vars[self.output_embedding.index()];
        tape.cross_entropy_smoothed(h, table, &batch.targets, smoothing)
    }

    /// Mean loss over sampled negatives (sampled softmax, BCE or gBCE) of
    /// the batch's non-zero targets, `[1]`: the hidden states are scored
    /// against the output table's rows of the targets and of each row's
    /// negatives (so their gradients flow back into it), never the whole
    /// table.
    pub fn sampled_loss(
        &self,
        tape: &mut Tape<'_, B>,
        vars: &[Var],
        batch: &DeviceBatch<B>,
        dropout: Option<DropoutContext>,
        negatives: &StepNegatives<B>,
    ) -> Var {
        let h = self.hidden(tape, vars, batch, dropout);
        let table = vars[self.output_embedding.index()];
        tape.sampled_loss(
            h,
            table,
            &batch.targets,
            negatives.negatives(),
            negatives.loss(),
        )
    }

    /// Inference on one batch: the mean loss over its non-zero targets and,
    /// when asked, the scores of every item (column 0 is padding) at the last
    /// position of each sequence, `[batch, vocab]` row-major.
    pub fn infer(&self, backend: &B, batch: &DeviceBatch<B>, with_scores: bool) -> Inference {
        let mut tape = Tape::new(backend, false);
        let vars = tape.params(&self.params);
        let table = vars[self.output_embedding.index()];
        let h = self.hidden(&mut tape, &vars, batch, None);
        let loss = tape.cross_entropy(h, table, &batch.targets);
        let scores =
            with_scores.then(|| backend.to_vec(&self.last_position_scores(&tape, h, batch.batch)));
        let targets = backend
            .ids_host(&batch.targets)
            .iter()
            .filter(|&&t| t != 0)
            .count();
        Inference {
            loss: backend.to_vec(tape.value(loss))[0],
            targets,
            scores,
        }
    }

    /// The scores of every item (column 0 is padding) at the last position
    /// of each of the `batch` sequences whose hidden states `h`
    /// ([`SasRec::hidden`]) are on `tape`: `[batch, vocab]` on the device.
    pub fn last_position_scores(&self, tape: &Tape<'_, B>, h: Var, batch: usize) -> B::Tensor {
        let b = tape.backend();
        let last = b.ids(&self.last_rows(batch));
        self.scores(b, &b.embedding(tape.value(h), &last))
    }

    /// The scores of every item (column 0 is padding) for hidden states
    /// `[rows, dim]` (e.g. [`SasRec::last_hidden`]): `[rows, vocab]`.
    pub fn scores(&self, backend: &B, hidden: &B::Tensor) -> B::Tensor {
        backend.matmul(hidden, self.output_table(), false, true)
    }

    /// Every weight on the host, `(name, shape, values)` in `state_dict` order.
    pub fn weights(&self, backend: &B) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        self.params
            .iter()
            .map(|(_, name, t)| (name.to_string(), backend.shape(t), backend.to_vec(t)))
            .collect()
    }

    /// The (input) item table `[vocab, dim]`.
    pub fn item_table(&self) -> &B::Tensor {
        self.params.get(self.item_embedding)
    }

    /// The output layer's table `[vocab, dim]`: the scores are hidden
    /// states times its transpose. The item table unless the output layer
    /// is untied.
    pub fn output_table(&self) -> &B::Tensor {
        self.params.get(self.output_embedding)
    }

    /// The output layer's table among `vars`, the parameters on a tape
    /// ([`Tape::params`]): what a loss of one's own scores hidden states
    /// against.
    pub fn output_table_var(&self, vars: &[Var]) -> Var {
        vars[self.output_embedding.index()]
    }
}
