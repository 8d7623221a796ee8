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
# # 4. Fine-tuning vs training from scratch, on tweets
#
# The sentiment recipe (`recipes/sentiment.py`) fine-tunes a pretrained encoder (MiniLM, BERT family) and
# trains the from-scratch transformer of notebooks 1-3 on the same tweets, tokenizer, batches and steps.
# About two minutes on a laptop CPU.

# %%
import json
import os
from pathlib import Path

import matplotlib.pyplot as plt
from IPython.display import Image, display

from finetune.reporting import report
from recipes.sentiment import SentimentConfig, run

# Settings. The test suite runs this notebook with NOTEBOOK_TINY=1 and a tiny model and data set
# (NOTEBOOK_MODEL, NOTEBOOK_DATASET): the same cells, in seconds.
TINY = os.environ.get("NOTEBOOK_TINY") == "1"
MODEL = os.environ.get("NOTEBOOK_MODEL", "minilm")
DATASET = os.environ.get("NOTEBOOK_DATASET", "tweets")
OUTPUT = Path(os.environ.get("NOTEBOOK_OUTPUT", "runs/notebooks"))
SIZE = (
    dict(
        max_train_samples=48,
        max_length=32,
        batch_size=8,
        eval_steps=3,
        max_eval_samples=32,
        scratch_layers=1,
        scratch_d_model=32,
    )
    if TINY
    else dict(max_train_samples=2000, eval_steps=10, max_eval_samples=500)
)

# %% [markdown]
# ## One run, two models
#
# `run(config)` is the whole recipe: the same function `finetune train sentiment` calls. It writes a run
# directory: the fine-tuned model, `scratch/`, `results.json`, `learning_curves.png`.

# %%
config = SentimentConfig(
    output_dir=str(OUTPUT / "sentiment"),
    overwrite=True,
    model=MODEL,
    dataset=DATASET,
    learning_rate=1e-4,
    scratch_learning_rate=5e-4,
    num_epochs=1,
    log_steps=5,
    **SIZE,
)
results = run(config)

# %% [markdown]
# ## The comparison
#
# Same data, same steps; the pretrained model starts from weights that already know English.

# %%
print(report.format_table(results))

# %% [markdown]
# ## Learning curves
#
# `results.json` keeps each model's history: the training loss every few steps and the validation accuracy
# at each evaluation, against the number of training examples seen.

# %%
fig, ax = plt.subplots(figsize=(7, 4))
for model in results["models"]:
    evals = [h for h in model["history"] if "eval" in h]
    ax.plot([h["samples"] for h in evals], [h["eval"]["accuracy"] for h in evals], marker="o", label=model["role"])
ax.set(xlabel="training examples seen", ylabel="validation accuracy", title="how fast each model learns")
ax.legend()
display(fig)  # (not plt.show(): the recipe switched matplotlib to its file-only backend to write its PNGs)
plt.close(fig)

# %% [markdown]
# The recipe draws the same data, with the training loss, into the run directory:

# %%
display(Image(filename=str(OUTPUT / "sentiment" / "learning_curves.png")))

# %% [markdown]
# ## The run directory is a model
#
# Any Hugging Face pipeline loads it.

# %%
from transformers import pipeline

classify = pipeline("text-classification", model=str(OUTPUT / "sentiment"))
for text in ["the crew were wonderful, thank you!", "three hours on the tarmac and no water"]:
    print(classify(text)[0], text)

# %% [markdown]
# ## What fine-tuning did to attention
#
# `finetune figures --run_dir RUN` draws, for one sentence and per layer, the pretrained checkpoint's
# attention before fine-tuning, after it, the difference, and the scratch model's attention after training.

# %%
from finetune.commands import figures

figures.main(["--run_dir", str(OUTPUT / "sentiment"), "--out", str(OUTPUT / "figures")])
display(Image(filename=str(OUTPUT / "figures" / "attention_before_after.png")))
print(json.loads((OUTPUT / "figures" / "attention_before_after.json").read_text())["mean_abs_change_per_layer"])

# %% [markdown]
# One run, one seed, one data size: is the gap real, and does it depend on how much data there is?
# Notebook 5 answers with a study.
