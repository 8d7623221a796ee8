"""F1: the harmonic mean of precision and recall.

average="binary" scores the positive class (label 1); "macro" averages the per-class F1 without weighting,
so a rare class counts as much as a common one.
"""

import datasets
import evaluate
import numpy as np


class F1(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="F1 score, binary (positive class 1) or macro-averaged over classes.",
            citation="",
            inputs_description="predictions: list of int; references: list of int; average: 'binary' | 'macro'",
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references, average="binary", pos_label=1):
        predictions, references = np.asarray(predictions), np.asarray(references)
        classes = [pos_label] if average == "binary" else sorted(set(references.tolist()) | set(predictions.tolist()))
        scores = []
        for c in classes:
            tp = np.sum((predictions == c) & (references == c))
            fp = np.sum((predictions == c) & (references != c))
            fn = np.sum((predictions != c) & (references == c))
            scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
        return {"f1": float(np.mean(scores))}
