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
# # 5. What pretraining buys: a data-efficiency study
#
# Pretraining matters most when labelled data is scarce, and one seed cannot tell a real gap from noise. So we
# train both models at several training-set sizes, with several seeds each, and compare. This is
# `finetune study data_efficiency sentiment --arms pretrained,scratch` at a size that runs in a few minutes (the
# full study, with our own pretrained transformer as a third arm: README, "Teaching", and notebook 6).

# %%
import json
import os
from pathlib import Path

import numpy as np
from IPython.display import Image, display
from scipy import stats

from finetune.commands import study

# The test suite sets NOTEBOOK_TINY=1 and a tiny model and data set: the same cells, in seconds.
TINY = os.environ.get("NOTEBOOK_TINY") == "1"
MODEL = os.environ.get("NOTEBOOK_MODEL", "minilm")
DATASET = os.environ.get("NOTEBOOK_DATASET", "tweets")
OUTPUT = Path(os.environ.get("NOTEBOOK_OUTPUT", "runs/notebooks"))
SIZES, SEEDS = ([16], [0, 1]) if TINY else ([100, 400], [0, 1])
MIN_EXAMPLES, MAX_EPOCHS = (16, 1) if TINY else (800, 8)
TINY_FIELDS = (
    [
        "--max_length",
        "32",
        "--batch_size",
        "8",
        "--max_eval_samples",
        "32",
        "--scratch_layers",
        "1",
        "--scratch_d_model",
        "32",
    ]
    if TINY
    else []
)

# %% [markdown]
# ## The study
#
# Each (size, seed) cell is one ordinary run of the recipe (both models), in its own folder. For one seed, the
# 100 examples are the first 100 of the 400 (nested subsets), so a bigger set only adds data. Small sets get more
# epochs, so that every cell is trained to convergence for its size, and every run stops early when validation
# accuracy stalls. Run the cell again and finished runs are skipped.

# %%
result = study.data_efficiency(
    "sentiment",
    SIZES,
    SEEDS,
    OUTPUT / "study",
    ["--model", MODEL, "--dataset", DATASET, *TINY_FIELDS],
    min_examples=MIN_EXAMPLES,
    max_epochs=MAX_EPOCHS,
    arms=["pretrained", "scratch"],
)
print(study.format_table(result))
for warning in result["warnings"]:  # a curve that falls with more data: an undertrained cell, named
    print("warning:", warning)

# %%
display(Image(filename=str(OUTPUT / "study" / "data_efficiency.png")))

# %% [markdown]
# ## Every cell
#
# `study.json` holds every arm of every cell: its test accuracy, optimizer steps and seconds.

# %%
cells = json.loads((OUTPUT / "study" / "study.json").read_text())["cells"]
for cell in cells:
    print(
        f"size {cell['size']:4d}  seed {cell['seed']}  {cell['arm']:10s}  {cell['metric']} {cell['value']:.4f}  "
        f"{cell['steps']:3d} steps  {cell['seconds']:.0f} s"
    )

# %% [markdown]
# ## Why a *paired* difference?
#
# Within one seed both models saw the same examples and were tested on the same split, so their difference
# cancels what that seed's data did to both. The 95% interval for the mean difference over n seeds is
# mean ± t(0.975, n-1) · std / √n. By hand, for the smallest size, against the study's table:

# %%
size = SIZES[0]
pick = lambda arm: np.array(
    [c["value"] for c in sorted(cells, key=lambda c: c["seed"]) if c["size"] == size and c["arm"] == arm]
)
differences = pick("pretrained") - pick("scratch")
n = len(differences)
half = stats.t.ppf(0.975, n - 1) * differences.std(ddof=1) / np.sqrt(n)
print(
    f"size {size}: mean difference {differences.mean():+.4f}, 95% interval "
    f"[{differences.mean() - half:+.4f}, {differences.mean() + half:+.4f}]"
)
print("the study says:", result["summary"]["sizes"][0]["differences"]["pretrained"])

# %% [markdown]
# With two seeds the interval is wide: t(0.975, 1) = 12.7. Three seeds bring it to 4.3, five to 2.8. To see
# the lesson sharply, run the full study from a terminal:
#
#     finetune study data_efficiency sentiment --sizes 100,1000,full --seeds 0,1,2
