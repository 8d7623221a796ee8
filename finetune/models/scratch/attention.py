"""Attention, the one new idea of "Attention Is All You Need" (Vaswani et al., 2017), section 3.2.

Every token asks a question (its *query*), every token offers a label (its *key*) and a content (its
*value*). A token's output is the average of all values, weighted by how well its query matches each key:

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V                                   (paper, Eq. 1)

Masks decide which keys a query may look at. Here a mask is a boolean tensor and **True means "may
attend"**; it broadcasts against the (B, n_heads, T_query, T_key) score matrix. Two masks cover every
model in this package:

- `padding_mask`: padding tokens are not words, nobody may attend to them;
- `causal_mask`:  position t may not see positions after t (a language model must not peek at the answer).

Shape legend used in the comments: B batch, T query length, S key/value length, C model width (d_model),
nh number of heads, hs head size (C // nh).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def scaled_dot_product_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    dropout: nn.Module | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(Q K^T / sqrt(d_k)) V, the paper's Eq. 1. Returns (output, attention weights).

    q: (..., T, d_k), k: (..., S, d_k), v: (..., S, d_v); mask: bool, broadcastable to (..., T, S), True = may
    attend. `dropout` (an nn.Dropout, so it follows train/eval mode) is applied to the weights before they mix
    the values, as in the reference implementation; the returned weights are the undropped ones, so every
    row is a probability distribution.
    """
    d_k = q.size(-1)
    # Why divide by sqrt(d_k): if the entries of q and k have variance 1, their dot product sums d_k such
    # terms and has variance d_k. Large scores push softmax into a near one-hot region where its gradient
    # vanishes; scaling brings the variance back to 1.
    scores = q @ k.transpose(-2, -1) / math.sqrt(d_k)  # (..., T, S)
    if mask is not None:
        # Forbidden positions get the most negative finite number rather than -inf, so their weight is
        # exactly 0 after softmax, yet a row with *no* allowed key (a padding query under a causal mask)
        # becomes a harmless uniform average instead of 0/0 = NaN that would leak into later layers.
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    weights = scores.softmax(dim=-1)  # (..., T, S), each row sums to 1
    mixing = dropout(weights) if dropout is not None else weights
    return mixing @ v, weights  # (..., T, d_v), (..., T, S)


def padding_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Hugging Face's attention_mask (B, S), 1 = real token, 0 = padding -> bool (B, 1, 1, S).

    The two singleton dimensions broadcast over heads and over queries: every query of every head ignores
    the same padding keys.
    """
    return attention_mask.bool()[:, None, None, :]  # (B, 1, 1, S)


def causal_mask(T: int, device: torch.device | None = None) -> torch.Tensor:
    """bool (T, T), lower triangular: query t may attend to keys 0..t, never to the future.

    For T = 3:   [[1, 0, 0],
                  [1, 1, 0],
                  [1, 1, 1]]
    Combine with a padding mask by `&`; broadcasting gives (B, 1, T, T).
    """
    return torch.ones(T, T, dtype=torch.bool, device=device).tril()


class MultiHeadAttention(nn.Module):
    """Multi-head attention (paper section 3.2.2, Eq. after Fig. 2):

        MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W^O,  head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V)

    One attention pattern can only express one kind of relation at a time (one average per token). h heads
    of size d_model / h each look for a different relation at the same total cost. The h per-head
    projections W_i^Q are stored side by side as one (d_model, d_model) linear layer, then split.

    Self-attention: queries, keys and values all come from `x`. Cross-attention (the decoder looking at the
    encoder): queries come from `x`, keys and values from `context`.
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0):
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.n_heads = n_heads
        self.head_size = d_model // n_heads
        self.q_proj = nn.Linear(d_model, d_model)  # W^Q for all heads at once
        self.k_proj = nn.Linear(d_model, d_model)  # W^K
        self.v_proj = nn.Linear(d_model, d_model)  # W^V
        self.out_proj = nn.Linear(d_model, d_model)  # W^O
        self.attn_dropout = nn.Dropout(dropout)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C) -> (B, nh, T, hs): each head gets its own slice of the features."""
        B, T, C = x.shape
        return x.view(B, T, self.n_heads, self.head_size).transpose(1, 2)

    def merge_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, nh, T, hs) -> (B, T, C): the "Concat" of the heads."""
        B, nh, T, hs = x.shape
        return x.transpose(1, 2).reshape(B, T, nh * hs)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, T, C) the queries' side; context: (B, S, C) the keys' and values' side (default: x).

        mask: bool, broadcastable to (B, nh, T, S), True = may attend.
        Returns (output (B, T, C), attention weights (B, nh, T, S)).
        """
        context = x if context is None else context
        q = self.split_heads(self.q_proj(x))  # (B, nh, T, hs)
        k = self.split_heads(self.k_proj(context))  # (B, nh, S, hs)
        v = self.split_heads(self.v_proj(context))  # (B, nh, S, hs)
        heads, weights = scaled_dot_product_attention(q, k, v, mask, self.attn_dropout)  # (B, nh, T, hs), (B, nh, T, S)
        return self.out_proj(self.merge_heads(heads)), weights  # (B, T, C), (B, nh, T, S)
