"""A trained run as a PyTorch module: the notebook's SASRec
(``nn.TransformerEncoder``, pre-LayerNorm, tied output layer) with the
run's sizes, feed-forward width included, and its weights, which load with
``load_state_dict(strict=True)``: the Rust model keeps PyTorch's names.

Needs PyTorch (``pip install torch``); the rest of the package does not.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn as nn


class SASRec(nn.Module):
    """The notebook's model; ``num_items`` counts the item table's rows
    (N + 1, row 0 is padding), ``ff_dim`` defaults to ``4 * embed_dim``."""

    def __init__(self, num_items, max_len, embed_dim=64, num_heads=2, num_layers=2, dropout=0.1, ff_dim=None):
        super().__init__()
        self.num_items = num_items
        self.max_len = max_len
        self.item_embedding = nn.Embedding(num_items, embed_dim, padding_idx=0)
        self.position_embedding = nn.Embedding(max_len, embed_dim)
        encoder_layer = nn.TransformerEncoderLayer(
            d_model=embed_dim,
            nhead=num_heads,
            dim_feedforward=ff_dim or embed_dim * 4,
            dropout=dropout,
            batch_first=True,
            norm_first=True,
        )
        self.transformer_encoder = nn.TransformerEncoder(encoder_layer, num_layers=num_layers)
        self.layer_norm = nn.LayerNorm(embed_dim)
        self.dropout = nn.Dropout(dropout)
        nn.init.xavier_uniform_(self.item_embedding.weight)
        nn.init.xavier_uniform_(self.position_embedding.weight)

    def forward(self, input_seq: torch.Tensor) -> torch.Tensor:
        """Logits ``[batch, len, num_items]`` of the next item at every position."""
        seq_len = input_seq.size(1)
        src_key_padding_mask = input_seq == 0
        src_mask = nn.Transformer.generate_square_subsequent_mask(seq_len, device=input_seq.device)
        positions = self.position_embedding(torch.arange(seq_len, device=input_seq.device))
        x = self.dropout(self.item_embedding(input_seq) + positions)
        # The encoder's inference fast path gives NaN for left-padded rows
        # whose keys are all masked; the regular path is the trained model.
        fastpath = torch.backends.mha.get_fastpath_enabled()
        torch.backends.mha.set_fastpath_enabled(False)
        try:
            out = self.transformer_encoder(x, mask=src_mask, src_key_padding_mask=src_key_padding_mask)
        finally:
            torch.backends.mha.set_fastpath_enabled(fastpath)
        out = self.layer_norm(out)
        return out @ self.item_embedding.weight.T


def window(history: Sequence[int], max_len: int) -> "list[int]":
    """The model's input after a history of item indices: its last
    ``max_len`` items, left-padded with 0."""
    history = list(history)[-max_len:]
    return [0] * (max_len - len(history)) + history


def from_weights(model: dict, weights: list) -> SASRec:
    """A :class:`SASRec` of config.json's ``model`` sizes holding
    ``weights`` (``(name, shape, float32 bytes)``), in eval mode."""
    module = SASRec(
        model["num_items"] + 1,
        model["max_len"],
        embed_dim=model["dim"],
        num_heads=model["heads"],
        num_layers=model["layers"],
        dropout=model["dropout"],
        ff_dim=model["ff_dim"],
    )
    state = {
        name: torch.from_numpy(np.frombuffer(data, dtype="<f4").reshape(shape).copy())
        for name, shape, data in weights
    }
    module.load_state_dict(state, strict=True)
    return module.eval()
