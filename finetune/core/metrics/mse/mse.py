"""Mean squared error between predicted and true scores: the regression loss, in the label's units squared."""

import datasets
import evaluate
import numpy as np


class MeanSquaredError(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Mean of (prediction - reference)^2.",
            citation="",
            inputs_description="predictions: list of float; references: list of float",
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}
            ),
        )

    def _compute(self, predictions, references):
        error = np.asarray(predictions, dtype=np.float64) - np.asarray(references, dtype=np.float64)
        return {"mse": float(np.mean(error**2))}
