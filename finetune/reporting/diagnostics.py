"""What a classifier's test predictions say beyond one number: per-class scores and calibration.

    per_class_table(references, predictions, names)  precision / recall / F1 / support for each class (or label)
    expected_calibration_error(confidences, correct)  ECE over equal-width confidence bins (15, as Guo et al. 2017)
    plot_reliability(...)                              reliability_<model>.png beside reliability_<model>.json

Calibration asks whether "90% sure" is right 90% of the time. Each prediction's confidence (its top class
probability) falls in one of 15 bins over [0, 1]; ECE is the bin-size-weighted mean gap between each bin's
accuracy and its mean confidence. A fine-tuned model is often over-confident; the diagram shows where.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from finetune.core.atomic_io import atomic_write_json, disk_errors
from finetune.reporting.report import save_figure

ECE_BINS = 15


def per_class_table(references, predictions, names: list[str]) -> list[dict]:
    """One row per class: precision, recall, F1 (0 where undefined) and support (true examples).

    references / predictions: (N,) class ids, or (N, K) 0/1 rows for multi-label (each label scored on its own).
    """
    references, predictions = np.asarray(references), np.asarray(predictions)
    if references.ndim == 1:  # one-vs-rest indicator columns, so one formula serves both layouts
        k = len(names)
        references, predictions = np.eye(k, dtype=bool)[references], np.eye(k, dtype=bool)[predictions]
    references, predictions = references.astype(bool), predictions.astype(bool)
    rows = []
    for i, name in enumerate(names):
        tp = int((references[:, i] & predictions[:, i]).sum())
        predicted, support = int(predictions[:, i].sum()), int(references[:, i].sum())
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
        rows.append(
            {
                "label": name,
                "precision": round(precision, 5),
                "recall": round(recall, 5),
                "f1": round(f1, 5),
                "support": support,
            }
        )
    return rows


def calibration_bins(confidences, correct, bins: int = ECE_BINS) -> list[dict]:
    """Equal-width bins over [0, 1] (the last one closed): count, mean confidence and accuracy of each non-empty bin."""
    confidences, correct = np.asarray(confidences, dtype=np.float64), np.asarray(correct, dtype=np.float64)
    index = np.minimum((confidences * bins).astype(int), bins - 1)  # confidence 1.0 belongs to the top bin
    rows = []
    for b in range(bins):
        members = index == b
        if members.any():
            rows.append(
                {
                    "low": b / bins,
                    "high": (b + 1) / bins,
                    "count": int(members.sum()),
                    "confidence": float(confidences[members].mean()),
                    "accuracy": float(correct[members].mean()),
                }
            )
    return rows


def expected_calibration_error(confidences, correct, bins: int = ECE_BINS) -> float:
    total = len(confidences)
    return float(
        sum(
            r["count"] / total * abs(r["accuracy"] - r["confidence"])
            for r in calibration_bins(confidences, correct, bins)
        )
    )


def confidence_and_correct(probabilities, references, multi_label: bool = False):
    """Single-label: the top class probability, and whether the top class is right. Multi-label: every (example,
    label) decision, its confidence max(p, 1 - p), and whether the thresholded decision is right."""
    probabilities, references = np.asarray(probabilities, dtype=np.float64), np.asarray(references)
    if multi_label:
        predicted = probabilities > 0.5
        return np.maximum(probabilities, 1 - probabilities).ravel(), (predicted == references.astype(bool)).ravel()
    return probabilities.max(axis=1), probabilities.argmax(axis=1) == references


def plot_reliability(run_dir: Path, name: str, confidences, correct, title: str) -> tuple[Path, float]:
    """reliability_<name>.png (accuracy against confidence per bin, the diagonal is perfect) and its JSON; returns
    ECE."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = calibration_bins(confidences, correct)
    ece = expected_calibration_error(confidences, correct)
    path = Path(run_dir) / f"reliability_{name}.png"
    with disk_errors(f"{path.stem}.json", Path(run_dir)):
        atomic_write_json(path.with_suffix(".json"), {"bins": ECE_BINS, "ece": ece, "rows": rows})
    fig, ax = plt.subplots(figsize=(5, 5))
    width = 1 / ECE_BINS
    ax.bar(
        [r["low"] for r in rows],
        [r["accuracy"] for r in rows],
        width=width,
        align="edge",
        edgecolor="black",
        color="tab:blue",
        alpha=0.8,
        label="accuracy",
    )
    ax.bar(
        [r["low"] for r in rows],
        [r["confidence"] - r["accuracy"] for r in rows],
        bottom=[r["accuracy"] for r in rows],
        width=width,
        align="edge",
        color="tab:red",
        alpha=0.3,
        label="gap to confidence",
    )
    ax.plot([0, 1], [0, 1], "k--", label="perfect calibration")
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1),
        xlabel="confidence",
        ylabel="accuracy",
        title=f"{title}\nECE {ece:.4f} ({ECE_BINS} bins)",
    )
    ax.legend(loc="upper left")
    fig.tight_layout()
    return save_figure(fig, path), ece
