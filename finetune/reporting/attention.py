"""The cross-attention alignment figure: for a few test sentences, where each output token looked in the source.

Each panel is one model's decoder cross-attention for one sentence (last decoder block, heads averaged): a
target-by-source heatmap, rows summing to 1. Fine-tuned and from-scratch models side by side, one row per sentence.
attention.json holds the numbers behind attention.png (tokens and weights), so the figure can be redrawn or checked.
"""

from __future__ import annotations

import json
from pathlib import Path

from finetune.core.atomic_io import atomic_write_json, disk_errors

FIGURE, NUMBERS = "attention.png", "attention.json"


def write_alignment_figure(run_dir: Path, examples: list[dict]) -> Path:
    """examples: [{"source": str, "maps": {model name: {source_tokens, target_tokens, weights}}}, ...] ->
    run_dir/attention.json and run_dir/attention.png (returned)."""
    run_dir = Path(run_dir)
    with disk_errors("the cross-attention figure", run_dir):
        atomic_write_json(run_dir / NUMBERS, {"layer": "last decoder block, heads averaged", "examples": examples})
        plot_alignment(examples, run_dir / FIGURE)
    return run_dir / FIGURE


def plot_alignment(examples: list[dict], path: Path) -> Path:
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(name for example in examples for name in example["maps"]))
    rows, cols = len(examples), len(names)
    sizes = [max(len(m["source_tokens"]), 4) for e in examples for m in e["maps"].values()]
    width = max(4.0, 0.32 * max(sizes or [8]))
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, width * 0.9 * rows), squeeze=False)
    for r, example in enumerate(examples):
        for c, name in enumerate(names):
            ax = axes[r][c]
            attention = example["maps"].get(name)
            if attention is None:
                ax.axis("off")
                continue
            # Each panel on its own scale (0 to its largest weight): an untrained model's nearly uniform rows would
            # be invisible on a 0..1 scale; the colour bar says the scale.
            image = ax.imshow(attention["weights"], cmap="Blues", vmin=0.0, aspect="auto")
            fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02)
            ax.set_xticks(range(len(attention["source_tokens"])))
            ax.set_xticklabels(attention["source_tokens"], rotation=90, fontsize=7)
            ax.set_yticks(range(len(attention["target_tokens"])))
            ax.set_yticklabels(attention["target_tokens"], fontsize=7)
            ax.set_title(name, fontsize=9)
            if c == 0:
                ax.set_ylabel("output token", fontsize=8)
            ax.set_xlabel("source token", fontsize=8)
    fig.suptitle("decoder cross-attention (last block, heads averaged): which source token each output token read")
    with warnings.catch_warnings():  # a token of a script the font lacks (a random model's output) shows as a box
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        fig.tight_layout(rect=(0, 0, 1, 0.98))  # (room for the figure's title above the first row's)
        fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def read_alignment(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / NUMBERS).read_text())


def alignment_array(attention: dict, title: str = ""):
    """One cross-attention map (cross_attention()'s dict) drawn as an RGB image array (the demo shows it)."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    width = min(2 + 0.32 * len(attention["source_tokens"]), 12)
    height = min(2 + 0.32 * len(attention["target_tokens"]), 12)
    fig, ax = plt.subplots(figsize=(width + 1, height))
    image = ax.imshow(attention["weights"], cmap="Blues", vmin=0.0, aspect="auto")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(len(attention["source_tokens"])), attention["source_tokens"], rotation=90, fontsize=8)
    ax.set_yticks(range(len(attention["target_tokens"])), attention["target_tokens"], fontsize=8)
    ax.set(xlabel="source token", ylabel="output token", title=title or "cross-attention (last block, mean of heads)")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        fig.tight_layout()
        fig.canvas.draw()
    array = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return array
