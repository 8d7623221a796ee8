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
# # 3. An encoder-decoder learns to reverse digits
#
# Chapters 10-12 of `docs/transformer.md`: the 2017 paper's own model, `ScratchTransformerForSeq2Seq`.
# The encoder reads "3 1 4 1 5", the decoder writes "5 1 4 1 3" one token at a time, reading the source
# through cross-attention. It learns this from nothing in under a minute on a CPU.

# %%
import os

import matplotlib.pyplot as plt
import torch

from finetune.models.scratch import ScratchTransformerConfig, ScratchTransformerForSeq2Seq

# The test suite runs every notebook with NOTEBOOK_TINY=1: the same cells, fewer steps.
TINY = os.environ.get("NOTEBOOK_TINY") == "1"
STEPS = 20 if TINY else 300
torch.manual_seed(0)
torch.set_num_threads(1)  # matrices this small run faster on one thread

# %% [markdown]
# ## The task
#
# Tokens: 0 padding, 1 start, 2 end, 3-12 the digits 0-9. The target is the reversed source, then "end".

# %%
PAD, START, END, LENGTH = 0, 1, 2, 5


def reverse_task(n, generator):
    source = torch.randint(0, 10, (n, LENGTH), generator=generator) + 3
    target = torch.cat([source.flip(1), torch.full((n, 1), END)], dim=1)
    return source, target


def digits(ids):
    return " ".join(str(i - 3) if i >= 3 else {PAD: "·", START: "<s>", END: "</s>"}[i] for i in ids.tolist())


held_out_source, held_out_target = reverse_task(200, torch.Generator().manual_seed(123))
held_out = {tuple(row) for row in held_out_source.tolist()}  # never trained on
print(digits(held_out_source[0]), "->", digits(held_out_target[0]))

# %% [markdown]
# ## The model
#
# 2 encoder and 2 decoder blocks, width 64, 4 heads. Source, target and output share one embedding matrix.

# %%
config = ScratchTransformerConfig(
    vocab_size=13,
    d_model=64,
    n_heads=4,
    n_layers=2,
    n_decoder_layers=2,
    d_ff=128,
    max_position_embeddings=16,
    dropout=0.0,
    pad_token_id=PAD,
    decoder_start_token_id=START,
    eos_token_id=END,
)
model = ScratchTransformerForSeq2Seq(config)
print(f"{sum(p.numel() for p in model.parameters()):,} parameters")

# %% [markdown]
# ## Training with teacher forcing
#
# The decoder gets the whole target shifted right (start token first) and, under the causal mask, predicts
# each next token from the ones before it: all positions are trained at once.

# %%
optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
generator = torch.Generator().manual_seed(0)
losses = []
model.train()
for step in range(STEPS):
    source, target = reverse_task(64, generator)
    unseen = torch.tensor([tuple(row) not in held_out for row in source.tolist()])
    loss = model(input_ids=source[unseen], labels=target[unseen]).loss
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    losses.append(loss.item())
plt.plot(losses)
plt.xlabel("step")
plt.ylabel("cross-entropy")
plt.yscale("log")
plt.show()

# %% [markdown]
# ## Greedy decoding on strings it never saw
#
# At test time there is no target to feed: `greedy_decode` writes one token, feeds it back, and repeats.

# %%
model.eval()
predicted = model.greedy_decode(held_out_source, max_new_tokens=LENGTH + 1)
exact = (predicted[:, 1:] == held_out_target).all(dim=1).float().mean().item()
for i in range(3):
    print(digits(held_out_source[i]), "->", digits(predicted[i]))
print(f"exact match on 200 unseen strings: {exact:.1%}")
if not TINY:
    assert exact > 0.95, "the model should reverse nearly every unseen string after 300 steps"

# %% [markdown]
# ## Where the decoder looks
#
# The cross-attention of the last decoder block: to write output position t, the decoder reads source
# position LENGTH - 1 - t: look for an anti-diagonal, which nobody programmed.

# %%
with torch.no_grad():
    outputs = model(input_ids=held_out_source[:1], decoder_input_ids=predicted[:1, :-1], output_attentions=True)
cross = outputs.cross_attentions[-1][0].mean(dim=0)  # last decoder block, (T, S), mean over heads
fig, ax = plt.subplots(figsize=(4, 4))
ax.imshow(cross, cmap="viridis")
ax.set_xticks(range(LENGTH), digits(held_out_source[0]).split())
queries = digits(predicted[0, :-1]).split()
ax.set_yticks(range(len(queries)), queries)
ax.set(xlabel="source (keys)", ylabel="decoder input (queries)", title="cross-attention, last block")
plt.show()

# %% [markdown]
# Notebook 4 leaves toy tasks: a pretrained encoder against this architecture trained from scratch, on tweets.
