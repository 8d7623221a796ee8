# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 1. Attention and masks, by hand
#
# Chapters 1-4 of `docs/transformer.md`. We compute scaled dot-product attention step by step on a toy
# sentence, add the two masks, and check every number against PyTorch's own
# `torch.nn.functional.scaled_dot_product_attention` and against this project's `finetune.models.scratch`.

# %%
import math

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from finetune.models.scratch import causal_mask, padding_mask, scaled_dot_product_attention

torch.manual_seed(0)

# %% [markdown]
# ## Queries, keys, values
#
# Five tokens, each a vector of size 8. Each token is projected three ways: a query (what am I looking
# for?), a key (what do I offer?) and a value (what do I pass on?). Random projections stand in for learned ones.

# %%
tokens = ["the", "cat", "sat", "down", "[PAD]"]
T, d_model, d_k = len(tokens), 8, 4
x = torch.randn(T, d_model)
W_q, W_k, W_v = (torch.randn(d_model, d_k) for _ in range(3))
q, k, v = x @ W_q, x @ W_k, x @ W_v  # each (T, d_k)
q.shape, k.shape, v.shape

# %% [markdown]
# ## Scores, scaling, softmax
#
# Score of token j for token i: how well query i matches key j, divided by √d_k so that the scores keep
# variance ≈ 1 whatever d_k is. Softmax over the keys turns each row into weights that sum to 1.

# %%
scores = q @ k.T / math.sqrt(d_k)  # (T, T): row i = query i, column j = key j
weights = scores.softmax(dim=-1)
output = weights @ v  # each token's new vector: a weighted average of the values
weights.sum(dim=-1)  # every row sums to 1


# %%
def show(matrix, title):
    fig, ax = plt.subplots(figsize=(4, 3.5))
    image = ax.imshow(matrix, cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(T), tokens, rotation=45)
    ax.set_yticks(range(T), tokens)
    ax.set(title=title, xlabel="key", ylabel="query")
    fig.colorbar(image)
    plt.show()


show(weights, "attention weights, no mask")

# %% [markdown]
# ## Why divide by √d_k?
#
# With unit-variance entries, a dot product of d_k terms has variance d_k. Large scores make softmax almost
# one-hot, and its gradient vanishes. The spread of the scores, without and with the scaling:

# %%
for dim in (4, 64, 512):
    a, b = torch.randn(10_000, dim), torch.randn(10_000, dim)
    dots = (a * b).sum(-1)
    print(f"d_k = {dim:3d}: std of q·k = {dots.std():6.2f}, after / √d_k = {(dots / math.sqrt(dim)).std():.2f}")

# %% [markdown]
# ## Masks: True means "may attend"
#
# **Padding**: the last token is padding, so no query may look at it. **Causal**: token t sees tokens 0..t
# only, so a model that predicts the next word cannot peek at it. Forbidden scores become the most negative
# number, so their weight after softmax is exactly 0.

# %%
attention_mask = torch.tensor([[1, 1, 1, 1, 0]])  # as a tokenizer returns it: 1 = real token
pad = padding_mask(attention_mask)[0, 0]  # (1, T): the same for every query
causal = causal_mask(T)  # (T, T), lower triangular
both = pad & causal
masked_weights = scores.masked_fill(~both, torch.finfo(scores.dtype).min).softmax(dim=-1)
show(masked_weights, "padding & causal mask")

# %% [markdown]
# ## Checked against PyTorch
#
# Our hand computation, `finetune.models.scratch.scaled_dot_product_attention`, and PyTorch's fused kernel must agree.

# %%
ours, ours_weights = scaled_dot_product_attention(q, k, v, both)
by_hand = masked_weights @ v
reference = F.scaled_dot_product_attention(q[None], k[None], v[None], attn_mask=both)[0]
print("hand vs PyTorch:   ", (by_hand - reference).abs().max().item())
print("scratch vs PyTorch:", (ours - reference).abs().max().item())
assert torch.allclose(by_hand, reference, atol=1e-5) and torch.allclose(ours, reference, atol=1e-5)
assert torch.allclose(ours_weights, masked_weights)

# %% [markdown]
# The padding column is exactly 0 in every row, and each row only sees its past. Next: many heads side by
# side, and where the order of the words comes from (notebook 2).
