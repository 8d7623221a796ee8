"""Matthews correlation coefficient: GLUE's CoLA metric, a correlation between predicted and true classes.

The multiclass form (Gorodkin's R_K) from the confusion matrix C: with t_k true counts, p_k predicted counts,
c correct and s samples, MCC = (c*s - sum t_k p_k) / sqrt((s^2 - sum p_k^2) (s^2 - sum t_k^2)); 0 when undefined.
For two classes it is the familiar (TP*TN - FP*FN) / sqrt(...)."""

import datasets
import evaluate
import numpy as np


class MatthewsCorrelation(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Matthews correlation coefficient (binary or multiclass), 0 when a marginal is constant.",
            citation="",
            inputs_description="predictions: list of int; references: list of int",
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references):
        predictions, references = np.asarray(predictions), np.asarray(references)
        classes = np.union1d(predictions, references)
        t = np.array([(references == k).sum() for k in classes], dtype=np.float64)  # true count per class
        p = np.array([(predictions == k).sum() for k in classes], dtype=np.float64)  # predicted count per class
        c, s = float((predictions == references).sum()), float(len(references))
        denominator = np.sqrt((s * s - p @ p) * (s * s - t @ t))
        return {"matthews_correlation": float((c * s - t @ p) / denominator) if denominator else 0.0}
