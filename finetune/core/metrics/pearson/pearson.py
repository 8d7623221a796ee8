"""Pearson correlation between predicted and true scores (STS-B): covariance over the product of standard deviations."""

import datasets
import evaluate
import numpy as np


class Pearson(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Pearson correlation coefficient; 0 when either side is constant.",
            citation="",
            inputs_description="predictions: list of float; references: list of float",
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}
            ),
        )

    def _compute(self, predictions, references):
        x = np.asarray(predictions, dtype=np.float64) - np.mean(predictions)
        y = np.asarray(references, dtype=np.float64) - np.mean(references)
        denominator = np.sqrt((x @ x) * (y @ y))
        return {"pearson": float(x @ y / denominator) if denominator else 0.0}
