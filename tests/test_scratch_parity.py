"""The from-scratch units agree with independent implementations: PyTorch's own attention and layers, and
the paper's positional-encoding formula evaluated with plain Python math.

Weights are copied from the PyTorch module into ours, dropout is off (eval mode), and outputs must match to
1e-5 in float32.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from finetune.models.scratch import (
    DecoderBlock,
    EncoderBlock,
    MultiHeadAttention,
    causal_mask,
    padding_mask,
    scaled_dot_product_attention,
    sinusoidal_positional_encoding,
)

ATOL = 1e-5
B, T, S, D_MODEL, N_HEADS, D_FF = 2, 5, 7, 16, 4, 32


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def hf_attention_mask(lengths, max_len):
    """A tokenizer-style attention_mask: 1 for the first `length` tokens, then 0 (right padding)."""
    return (torch.arange(max_len)[None, :] < torch.tensor(lengths)[:, None]).long()


# --- scaled dot-product attention ---------------------------------------------------------------------


@pytest.mark.parametrize("mask_kind", ["none", "padding", "causal"])
def test_attention_matches_torch_sdpa(mask_kind):
    q = torch.randn(B, N_HEADS, T, 8)
    k = torch.randn(B, N_HEADS, T, 8)
    v = torch.randn(B, N_HEADS, T, 8)
    mask = {
        "none": None,
        "padding": padding_mask(hf_attention_mask([T, 3], T)),
        "causal": causal_mask(T),
    }[mask_kind]
    ours, weights = scaled_dot_product_attention(q, k, v, mask)
    reference = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # bool: True = may attend, same as ours
    assert (ours - reference).abs().max() <= ATOL
    assert torch.allclose(weights.sum(-1), torch.ones(B, N_HEADS, T))
    if mask is not None:
        assert (weights.masked_select(~mask.expand_as(weights)) == 0).all()


def test_masks_shapes_and_values():
    assert causal_mask(3).tolist() == [[True, False, False], [True, True, False], [True, True, True]]
    mask = padding_mask(torch.tensor([[1, 1, 0]]))
    assert mask.shape == (1, 1, 1, 3) and mask.flatten().tolist() == [True, True, False]


# --- positional encoding --------------------------------------------------------------------------------


def test_positional_encoding_matches_paper_formula():
    d_model = 10
    table = sinusoidal_positional_encoding(60, d_model)
    for pos in (0, 1, 7, 59):
        for i in range(d_model // 2):
            angle = pos / (10000 ** (2 * i / d_model))
            assert abs(table[pos, 2 * i].item() - math.sin(angle)) <= ATOL
            assert abs(table[pos, 2 * i + 1].item() - math.cos(angle)) <= ATOL


# --- multi-head attention vs torch.nn.MultiheadAttention ----------------------------------------------------


def copy_attention(ours: MultiHeadAttention, theirs: nn.MultiheadAttention) -> None:
    """torch stores W^Q, W^K, W^V stacked in one (3C, C) matrix; ours are three (C, C) layers."""
    with torch.no_grad():
        for proj, weight, bias in zip(
            (ours.q_proj, ours.k_proj, ours.v_proj),
            theirs.in_proj_weight.chunk(3),
            theirs.in_proj_bias.chunk(3),
        ):
            proj.weight.copy_(weight)
            proj.bias.copy_(bias)
        ours.out_proj.load_state_dict(theirs.out_proj.state_dict())


def test_multi_head_self_attention_matches_torch_with_key_padding_mask():
    theirs = nn.MultiheadAttention(D_MODEL, N_HEADS, batch_first=True).eval()
    ours = MultiHeadAttention(D_MODEL, N_HEADS).eval()
    copy_attention(ours, theirs)
    x = torch.randn(B, T, D_MODEL)
    attention_mask = hf_attention_mask([T, 2], T)
    out, weights = ours(x, mask=padding_mask(attention_mask))
    # torch's key_padding_mask has the opposite meaning: True = ignore this key.
    ref_out, ref_weights = theirs(x, x, x, key_padding_mask=attention_mask == 0, average_attn_weights=False)
    assert (out - ref_out).abs().max() <= ATOL
    assert (weights - ref_weights).abs().max() <= ATOL


def test_multi_head_cross_attention_matches_torch():
    theirs = nn.MultiheadAttention(D_MODEL, N_HEADS, batch_first=True).eval()
    ours = MultiHeadAttention(D_MODEL, N_HEADS).eval()
    copy_attention(ours, theirs)
    x, memory = torch.randn(B, T, D_MODEL), torch.randn(B, S, D_MODEL)
    out, weights = ours(x, context=memory)
    ref_out, ref_weights = theirs(x, memory, memory, average_attn_weights=False)
    assert weights.shape == (B, N_HEADS, T, S)
    assert (out - ref_out).abs().max() <= ATOL
    assert (weights - ref_weights).abs().max() <= ATOL


# --- encoder and decoder blocks vs torch.nn.TransformerEncoderLayer / TransformerDecoderLayer -------------------


def copy_feed_forward_and_norms(ours: nn.Module, theirs: nn.Module, n_norms: int) -> None:
    ours.feed_forward.linear1.load_state_dict(theirs.linear1.state_dict())
    ours.feed_forward.linear2.load_state_dict(theirs.linear2.state_dict())
    for i in range(1, n_norms + 1):
        getattr(ours, f"norm{i}").load_state_dict(getattr(theirs, f"norm{i}").state_dict())


@pytest.mark.parametrize("norm_first", [True, False], ids=["pre-LN", "post-LN"])
def test_encoder_block_matches_torch_encoder_layer(norm_first):
    theirs = nn.TransformerEncoderLayer(
        D_MODEL, N_HEADS, D_FF, dropout=0.0, activation="relu", batch_first=True, norm_first=norm_first
    ).eval()
    ours = EncoderBlock(D_MODEL, N_HEADS, D_FF, dropout=0.0, norm_first=norm_first).eval()
    copy_attention(ours.self_attn, theirs.self_attn)
    copy_feed_forward_and_norms(ours, theirs, n_norms=2)
    x = torch.randn(B, T, D_MODEL)
    attention_mask = hf_attention_mask([T, 3], T)
    out, _ = ours(x, mask=padding_mask(attention_mask))
    reference = theirs(x, src_key_padding_mask=attention_mask == 0)
    assert (out - reference).abs().max() <= ATOL


@pytest.mark.parametrize("norm_first", [True, False], ids=["pre-LN", "post-LN"])
def test_decoder_block_matches_torch_decoder_layer(norm_first):
    theirs = nn.TransformerDecoderLayer(
        D_MODEL, N_HEADS, D_FF, dropout=0.0, activation="relu", batch_first=True, norm_first=norm_first
    ).eval()
    ours = DecoderBlock(D_MODEL, N_HEADS, D_FF, dropout=0.0, norm_first=norm_first).eval()
    copy_attention(ours.self_attn, theirs.self_attn)
    copy_attention(ours.cross_attn, theirs.multihead_attn)
    copy_feed_forward_and_norms(ours, theirs, n_norms=3)
    x, memory = torch.randn(B, T, D_MODEL), torch.randn(B, S, D_MODEL)
    source_mask = hf_attention_mask([S, 4], S)
    out, _, _ = ours(x, memory, self_mask=causal_mask(T), memory_mask=padding_mask(source_mask))
    reference = theirs(x, memory, tgt_mask=~causal_mask(T), memory_key_padding_mask=source_mask == 0)
    assert (out - reference).abs().max() <= ATOL
