"""A trained run as a PyTorch module: SASRec with the run's sizes
(feed-forward width included), its architecture options (LayerNorm or
RMSNorm, ReLU or SwiGLU feed-forward, gated residuals, a tied or untied
output layer, rotary position embedding) and its weights, which load with
``load_state_dict(strict=True)``: the Rust model keeps PyTorch's names
(those of ``nn.TransformerEncoder`` for the notebook's model).

Needs PyTorch (``pip install torch``); the rest of the package does not.
"""

from __future__ import annotations

from typing import Sequence

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# The Rust model's epsilons (PyTorch's LayerNorm default; LLaMA's RMSNorm).
LAYER_NORM_EPS = 1e-5
RMS_NORM_EPS = 1e-6


def _norm(kind: str, dim: int) -> nn.Module:
    if kind == "rms":
        return nn.RMSNorm(dim, eps=RMS_NORM_EPS)
    return nn.LayerNorm(dim, eps=LAYER_NORM_EPS)


def _rotary_tables(max_len: int, head_dim: int) -> "tuple[torch.Tensor, torch.Tensor]":
    """cos and sin ``[max_len, head_dim / 2]`` of the angles ``p * 10000^(-2i / head_dim)``,
    computed in float64 and rounded once, as the Rust model's table."""
    i = torch.arange(head_dim // 2, dtype=torch.float64)
    angles = torch.arange(max_len, dtype=torch.float64)[:, None] * 10000.0 ** (-2.0 * i / head_dim)
    return angles.cos().float(), angles.sin().float()


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Turns ``[batch, heads, len, head_dim]``: column ``i`` pairs with ``i + head_dim / 2``."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


def _rotary_attention(attn: nn.MultiheadAttention, h, cos, sin, masked) -> torch.Tensor:
    """``attn``'s computation with its weights, the queries and keys turned; ``masked``
    ``[batch, 1, len, len]`` is True where a key is hidden (a query with none left gets
    zero probabilities, as in the Rust model)."""
    batch, seq_len, dim = h.shape
    heads = attn.num_heads

    def split(t):
        return t.reshape(batch, seq_len, heads, dim // heads).transpose(1, 2)

    q, k, v = (split(t) for t in F.linear(h, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1))
    q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
    scores = q @ k.transpose(-1, -2) / math.sqrt(dim // heads)
    none_left = masked.all(dim=-1, keepdim=True)
    scores = scores.masked_fill(masked, float("-inf")).masked_fill(none_left, 0.0)
    probs = torch.softmax(scores, dim=-1).masked_fill(none_left, 0.0)
    return attn.out_proj((probs @ v).transpose(1, 2).reshape(batch, seq_len, dim))


class Block(nn.Module):
    """One pre-norm transformer block: ``x + attn(norm1(x))``, then
    ``x + ff(norm2(x))``, each branch gated by ``sigmoid(gate(x))`` with
    gated residuals."""

    def __init__(self, dim: int, heads: int, ff_dim: int, options: dict):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm1 = _norm(options["norm"], dim)
        self.norm2 = _norm(options["norm"], dim)
        self.swiglu = options["feed_forward"] == "swiglu"
        self.linear1 = nn.Linear(dim, ff_dim, bias=not self.swiglu)
        self.linear2 = nn.Linear(ff_dim, dim, bias=not self.swiglu)
        if self.swiglu:
            self.linear3 = nn.Linear(dim, ff_dim, bias=False)
        self.gated = bool(options["gated_residual"])
        if self.gated:
            self.gate1 = nn.Linear(dim, dim)
            self.gate2 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, causal: torch.Tensor, padding: torch.Tensor, rotary) -> torch.Tensor:
        h = self.norm1(x)
        if rotary is None:
            attn, _ = self.self_attn(h, h, h, attn_mask=causal, key_padding_mask=padding, need_weights=False)
        else:
            masked = (causal == float("-inf"))[None, None] | (padding == float("-inf"))[:, None, None, :]
            attn = _rotary_attention(self.self_attn, h, *rotary, masked)
        x = x + (torch.sigmoid(self.gate1(x)) * attn if self.gated else attn)
        h = self.norm2(x)
        if self.swiglu:
            ff = self.linear2(F.silu(self.linear1(h)) * self.linear3(h))
        else:
            ff = self.linear2(F.relu(self.linear1(h)))
        return x + (torch.sigmoid(self.gate2(x)) * ff if self.gated else ff)


class SASRec(nn.Module):
    """SASRec as the run's config.json ``model`` section describes it
    (``num_items`` real items: the item table has ``num_items + 1`` rows,
    row 0 is padding). In eval mode; dropout is left out (inference)."""

    def __init__(self, model: dict):
        super().__init__()
        options = {
            "norm": model.get("norm", "layer"),
            "feed_forward": model.get("feed_forward", "relu"),
            "gated_residual": model.get("gated_residual", False),
            "output_layer": model.get("output_layer", "tied"),
        }
        # The turn's cosines and sines, with rotary position embedding.
        self.rotary = _rotary_tables(model["max_len"], model["dim"] // model["heads"]) if model.get("rotary") else None
        vocab, dim = model["num_items"] + 1, model["dim"]
        self.max_len = model["max_len"]
        self.item_embedding = nn.Embedding(vocab, dim, padding_idx=0)
        self.position_embedding = nn.Embedding(self.max_len, dim)
        self.transformer_encoder = nn.Module()
        self.transformer_encoder.layers = nn.ModuleList(
            [Block(dim, model["heads"], model["ff_dim"], options) for _ in range(model["layers"])]
        )
        self.layer_norm = _norm(options["norm"], dim)
        self.untied = options["output_layer"] == "untied"
        if self.untied:
            self.output_embedding = nn.Embedding(vocab, dim)

    def hidden(self, input_seq: torch.Tensor) -> torch.Tensor:
        """The final hidden states ``[batch, len, dim]``: a user's vector is
        the last position's."""
        seq_len = input_seq.size(1)
        causal = nn.Transformer.generate_square_subsequent_mask(seq_len, device=input_seq.device)
        padding = torch.zeros(input_seq.shape, device=input_seq.device).masked_fill(
            input_seq == 0, float("-inf")
        )
        positions = self.position_embedding(torch.arange(seq_len, device=input_seq.device))
        x = self.item_embedding(input_seq) + positions
        rotary = None
        if self.rotary is not None:
            rotary = tuple(t[:seq_len].to(input_seq.device) for t in self.rotary)
        for layer in self.transformer_encoder.layers:
            x = layer(x, causal, padding, rotary)
        return self.layer_norm(x)

    def forward(self, input_seq: torch.Tensor) -> torch.Tensor:
        """Logits ``[batch, len, num_items + 1]`` of the next item at every position."""
        table = self.output_embedding.weight if self.untied else self.item_embedding.weight
        return self.hidden(input_seq) @ table.T


def window(history: Sequence[int], max_len: int) -> "list[int]":
    """The model's input after a history of item indices: its last
    ``max_len`` items, left-padded with 0."""
    history = list(history)[-max_len:]
    return [0] * (max_len - len(history)) + history


def from_weights(model: dict, weights: list) -> SASRec:
    """A :class:`SASRec` of config.json's ``model`` section holding
    ``weights`` (``(name, shape, float32 bytes)``), in eval mode."""
    module = SASRec(model)
    state = {
        name: torch.from_numpy(np.frombuffer(data, dtype="<f4").reshape(shape).copy())
        for name, shape, data in weights
    }
    module.load_state_dict(state, strict=True)
    return module.eval()
