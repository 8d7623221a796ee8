"""Reporting: results.json, the side-by-side table on the terminal, and the learning-curve PNG.

Every recipe reports the same way, so the pretrained-vs-from-scratch comparison reads the same for text
classification, generation and images.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Optional

from finetune.core.atomic_io import atomic_write_json, disk_errors, user_umask
from finetune.reporting.tables import fmt_value, text_table


def model_entry(role: str, name: str, source: str, directory: str, result) -> dict:
    """One model's line in results.json (see README: 'What a run writes'); `result` is engine.train's TrainResult."""
    from finetune.models.loading import count_parameters

    return {
        "role": role,
        "name": name,
        "source": source,
        "dir": directory,
        "parameters": count_parameters(result.model),
        "train_seconds": round(result.train_seconds, 2),
        "train_samples": result.train_samples,
        "samples_per_second": round(result.samples_per_second, 2),
        "steps": result.steps,
        "stopped_early": result.stopped_early,
        "train_tokens": result.real_tokens,  # non-padding tokens trained on (0 where batches carry no attention mask)
        "padding_fraction": round(1 - result.real_tokens / result.padded_tokens, 4) if result.padded_tokens else None,
        "training_precision": result.training_precision,  # training and validation (autocast, if not fp32)
        "test_precision": result.test_precision,  # the test numbers; finetune evaluate computes in fp32
        "test": {k: round(v, 5) for k, v in result.test_metrics.items()},
        "history": result.history,
    }


def scratch_entry(result, name: str = "scratch-transformer", initialised_from: Optional[dict] = None) -> dict:
    """The from-scratch model's line: every recipe trains it into run_dir/scratch; with --scratch_init, what it
    started from (finetune.models.scratch_init.start_from)."""
    entry = model_entry("scratch", name, "finetune.models.scratch", "scratch", result)
    if initialised_from:
        entry["initialised_from"] = initialised_from
    return entry


def write_results(run_dir: Path, results: dict) -> Path:
    path = Path(run_dir) / "results.json"
    with disk_errors("results.json", Path(run_dir)):
        atomic_write_json(path, results)
    return path


def format_table(results: dict) -> str:
    """A plain-text table: one row per model, test metrics first."""
    models = results["models"]
    metric_names = list(dict.fromkeys(k for m in models for k in m["test"]))
    header = ["model", "role", *metric_names, "parameters", "train s", "samples/s"]
    rows = []
    for m in models:
        rows.append(
            [
                m["name"],
                m["role"],
                *(fmt_value(m["test"].get(k)) for k in metric_names),
                f"{m['parameters'] / 1e6:.1f}M",
                f"{m['train_seconds']:.0f}",
                f"{m['samples_per_second']:.1f}",
            ]
        )
    return text_table(header, rows, align="llr")


def plot_learning_curves(run_dir: Path, results: dict, metric: str, log_scale: bool = False) -> Path:
    """learning_curves.png: training loss and the validation metric against training examples seen."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(11, 4))
    for m in results["models"]:
        train = [h for h in m["history"] if "train_loss" in h]
        evals = [h for h in m["history"] if "eval" in h and metric in h["eval"]]
        label = f"{m['name']} ({m['role']})"
        ax_loss.plot([h["samples"] for h in train], [h["train_loss"] for h in train], label=label)
        ax_metric.plot([h["samples"] for h in evals], [h["eval"][metric] for h in evals], marker="o", label=label)
    ax_loss.set(title="training loss", xlabel="training examples seen", ylabel="loss")
    ax_metric.set(title=f"validation {metric}", xlabel="training examples seen", ylabel=metric)
    if log_scale:  # e.g. perplexity: from-scratch models start near the vocabulary size, pretrained ones near 10
        ax_metric.set_yscale("log")
    for ax in (ax_loss, ax_metric):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"{results['task']}: pretrained vs from scratch" if len(results["models"]) > 1 else results["task"])
    fig.tight_layout()
    return save_figure(fig, Path(run_dir) / "learning_curves.png")


def confusion_matrix(references, predictions, num_labels: int) -> list[list[int]]:
    """counts[true][predicted] over paired label ids."""
    counts = [[0] * num_labels for _ in range(num_labels)]
    for true, predicted in zip(references, predictions):
        counts[int(true)][int(predicted)] += 1
    return counts


def plot_confusion_matrix(
    run_dir: Path, name: str, references, predictions, label_names: list[str], title: str
) -> Path:
    """confusion_matrix_<name>.png (rows: true label, columns: predicted) beside confusion_matrix_<name>.json."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = confusion_matrix(references, predictions, len(label_names))
    total = sum(map(sum, counts))
    correct = sum(counts[i][i] for i in range(len(counts)))
    path = Path(run_dir) / f"confusion_matrix_{name}.png"
    with disk_errors(f"{path.stem}.json", Path(run_dir)):
        atomic_write_json(
            path.with_suffix(".json"),
            {
                "labels": label_names,
                "rows": "true label",
                "columns": "predicted label",
                "counts": counts,
                "accuracy": correct / total if total else None,
            },
        )
    k = len(label_names)
    size = min(3 + 0.45 * k, 14)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(counts, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    if k <= 30:  # beyond that, tick labels and counts are unreadable anyway
        ax.set_xticks(range(k), label_names, rotation=90 if max(map(len, label_names)) > 3 else 0)
        ax.set_yticks(range(k), label_names)
        peak = max(max(row) for row in counts) or 1
        for i in range(k):
            for j in range(k):
                if counts[i][j]:
                    ax.text(
                        j,
                        i,
                        counts[i][j],
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="white" if counts[i][j] > peak / 2 else "black",
                    )
    ax.set(
        xlabel="predicted label",
        ylabel="true label",
        title=f"{title}\n{correct}/{total} correct" + (f" ({correct / total:.1%})" if total else ""),
    )
    fig.tight_layout()
    return save_figure(fig, path)


def save_figure(fig, path: Path, **savefig_kwargs) -> Path:
    """Write a matplotlib figure atomically (temporary file, then rename) and close it.

    A full disk or an unwritable folder becomes a one-line error; an earlier PNG at `path` stays whole.
    """
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with disk_errors(path.name, path.parent):
        # A unique temporary name: several processes (concurrent finetune search) may draw the same figure.
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp.png", dir=path.parent)

        os.fchmod(fd, 0o666 & ~user_umask())  # mkstemp makes 0600: the figure gets the mode a plain open() gives
        os.close(fd)
        tmp = Path(tmp)
        try:
            fig.savefig(tmp, **{"dpi": 110, **savefig_kwargs})
            tmp.replace(path)
        finally:
            plt.close(fig)
            tmp.unlink(missing_ok=True)
    return path
