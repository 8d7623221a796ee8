"""Spearman rank correlation (STS-B): the Pearson correlation of the ranks, tied values sharing their average rank."""

import datasets
import evaluate
import numpy as np


class Spearman(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Spearman rank correlation coefficient; 0 when either side is constant.",
            citation="",
            inputs_description="predictions: list of float; references: list of float",
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}
            ),
        )

    def _compute(self, predictions, references):
        x, y = _ranks(predictions), _ranks(references)
        x, y = x - x.mean(), y - y.mean()
        denominator = np.sqrt((x @ x) * (y @ y))
        return {"spearman": float(x @ y / denominator) if denominator else 0.0}


def _ranks(values):
    """1-based ranks; a run of equal values gets the mean of the ranks it spans."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(1, len(values) + 1)
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return sums[inverse] / counts[inverse]
