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
# # 2. Multi-head attention and positional encoding
#
# Chapters 5-6 and 13 of `docs/transformer.md`: heads side by side, checked against
# `torch.nn.MultiheadAttention`; the sinusoidal position codes; and where a pretrained model and an untrained
# one look in a real sentence.

# %%
import matplotlib.pyplot as plt
import torch
from torch import nn

from finetune.models.scratch import MultiHeadAttention, sinusoidal_positional_encoding

torch.manual_seed(0)

# %% [markdown]
# ## Splitting into heads
#
# With d_model = 16 and 4 heads, each head works on a slice of 4 features: (B, T, C) → (B, nh, T, hs).

# %%
B, T, C, heads = 2, 6, 16, 4
attention = MultiHeadAttention(C, heads).eval()
x = torch.randn(B, T, C)
print("split:", attention.split_heads(x).shape, " merged back:", attention.merge_heads(attention.split_heads(x)).shape)
output, weights = attention(x)
print("output:", output.shape, " weights, one (T, T) map per head:", weights.shape)

# %% [markdown]
# ## The same as PyTorch's layer
#
# `nn.MultiheadAttention` stores W^Q, W^K, W^V stacked in one matrix; we copy ours into it and compare.

# %%
reference = nn.MultiheadAttention(C, heads, batch_first=True).eval()
with torch.no_grad():
    reference.in_proj_weight.copy_(
        torch.cat([attention.q_proj.weight, attention.k_proj.weight, attention.v_proj.weight])
    )
    reference.in_proj_bias.copy_(torch.cat([attention.q_proj.bias, attention.k_proj.bias, attention.v_proj.bias]))
    reference.out_proj.weight.copy_(attention.out_proj.weight)
    reference.out_proj.bias.copy_(attention.out_proj.bias)
theirs, their_weights = reference(x, x, x, average_attn_weights=False)
print("largest difference:", (output - theirs).abs().max().item())
assert torch.allclose(output, theirs, atol=1e-5) and torch.allclose(weights, their_weights, atol=1e-6)

# %% [markdown]
# Each head has its own pattern (here random, since nothing is trained):

# %%
fig, axes = plt.subplots(1, heads, figsize=(12, 3))
for h, ax in enumerate(axes):
    ax.imshow(weights[0, h].detach(), cmap="viridis", vmin=0, vmax=1)
    ax.set_title(f"head {h + 1}")
plt.show()

# %% [markdown]
# ## Attention ignores order
#
# Shuffle the tokens and every output is shuffled the same way: without help, "dog bites man" and "man bites
# dog" look alike.

# %%
order = torch.randperm(T)
shuffled, _ = attention(x[:, order])
assert torch.allclose(shuffled, output[:, order], atol=1e-6)
print("outputs of shuffled tokens = shuffled outputs")

# %% [markdown]
# ## Sinusoidal positional encoding
#
# PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(...). Each column pair is a clock with its own
# period: fast clocks tell neighbours apart, slow ones give the coarse position.

# %%
table = sinusoidal_positional_encoding(100, 128)
fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4))
image = left.imshow(table, cmap="RdBu", vmin=-1, vmax=1, aspect="auto")
left.set(xlabel="dimension", ylabel="position", title="the whole table")
fig.colorbar(image, ax=left)
for dim in (0, 10, 40, 100):
    right.plot(table[:, dim], label=f"dimension {dim}")
right.set(xlabel="position", title="a few columns: the clocks slow down to the right")
right.legend()
plt.show()

# %% [markdown]
# Nearby positions have similar codes; the similarity falls off with distance, the same way from any start:

# %%
similarity = table @ table.T
plt.plot(similarity[50], label="position 50 against all")
plt.plot(similarity[20], label="position 20 against all")
plt.xlabel("position")
plt.legend()
plt.show()

# %% [markdown]
# ## A real sentence: pretrained vs untrained attention
#
# `finetune figures` draws this for the docs. In "The cat sat on the mat because it was tired", where does
# *it* look? The packaged MiniLM (pretrained, not fine-tuned) against a randomly initialised scratch model.

# %%
from finetune.commands import figures

panels = figures.attention_panels(None)  # the packaged MiniLM, and an untrained scratch model
fig, axes = plt.subplots(1, 2, figsize=(14, 4))
for ax, panel in zip(axes, panels):
    ax.imshow(panel["focus_attention_per_layer"], cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(panel["tokens"])), panel["tokens"], rotation=90)
    ax.set(title=f'{panel["label"]}: attention of "it"', ylabel="layer")
plt.show()

# %% [markdown]
# The untrained model spreads its attention evenly; the pretrained one has learned where to look, before
# any fine-tuning. Notebook 3 trains a whole encoder-decoder from nothing.
