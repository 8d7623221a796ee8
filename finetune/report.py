"""Reporting: results.json, the side-by-side table on the terminal, and the learning-curve PNG.

Every recipe reports the same way, so the pretrained-vs-from-scratch comparison reads the same for text
classification, generation and images.
"""

from __future__ import annotations

from pathlib import Path

from finetune.io import atomic_write_json


def model_entry(role: str, name: str, source: str, directory: str, parameters: int, result) -> dict:
    """One model's line in results.json (see README: 'What a run writes')."""
    return {
        "role": role,
        "name": name,
        "source": source,
        "dir": directory,
        "parameters": parameters,
        "train_seconds": round(result.train_seconds, 2),
        "train_samples": result.train_samples,
        "samples_per_second": round(result.samples_per_second, 2),
        "steps": result.steps,
        "stopped_early": result.stopped_early,
        "padding_fraction": round(1 - result.real_tokens / result.padded_tokens, 4) if result.padded_tokens else None,
        "test": {k: round(v, 5) for k, v in result.test_metrics.items()},
        "history": result.history,
    }


def write_results(run_dir: Path, results: dict) -> Path:
    path = Path(run_dir) / "results.json"
    atomic_write_json(path, results)
    return path


def format_table(results: dict) -> str:
    """A plain-text table: one row per model, test metrics first."""
    models = results["models"]
    metric_names = list(dict.fromkeys(k for m in models for k in m["test"]))
    header = ["model", "role", *metric_names, "parameters", "train s", "samples/s"]
    rows = []
    for m in models:
        rows.append([m["name"], m["role"], *(f"{m['test'].get(k, float('nan')):.4f}" for k in metric_names),
                     f"{m['parameters'] / 1e6:.1f}M", f"{m['train_seconds']:.0f}", f"{m['samples_per_second']:.1f}"])
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) if i < 2 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    rule = "-" * len(line(header))
    return "\n".join([rule, line(header), rule, *(line(r) for r in rows), rule])


def plot_learning_curves(run_dir: Path, results: dict, metric: str) -> Path:
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
    for ax in (ax_loss, ax_metric):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"{results['task']}: pretrained vs from scratch" if len(results["models"]) > 1 else results["task"])
    fig.tight_layout()
    path = Path(run_dir) / "learning_curves.png"
    tmp = path.with_name(".learning_curves.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path
