"""F1: the harmonic mean of precision and recall.

average="binary" scores the positive class (label 1); "macro" averages the per-class F1 without weighting,
so a rare class counts as much as a common one; "micro" pools every class's counts first (for single-label data
that equals accuracy).
"""

import datasets
import evaluate
import numpy as np


class F1(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="F1 score, binary (positive class 1), macro- or micro-averaged over classes.",
            citation="",
            inputs_description="predictions: list of int; references: list of "
            "int; average: 'binary' | 'macro' | 'micro'",
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references, average="binary", pos_label=1):
        predictions, references = np.asarray(predictions), np.asarray(references)
        classes = [pos_label] if average == "binary" else sorted(set(references.tolist()) | set(predictions.tolist()))
        counts = []  # (tp, fp, fn) per class
        for c in classes:
            counts.append(
                (
                    np.sum((predictions == c) & (references == c)),
                    np.sum((predictions == c) & (references != c)),
                    np.sum((predictions != c) & (references == c)),
                )
            )
        if average == "micro":
            counts = [tuple(np.sum(counts, axis=0))]
        scores = [0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn) for tp, fp, fn in counts]
        return {"f1": float(np.mean(scores))}
