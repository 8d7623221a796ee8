"""Mean absolute error between predicted and true scores, in the label's units."""

import datasets
import evaluate
import numpy as np


class MeanAbsoluteError(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Mean of |prediction - reference|.",
            citation="",
            inputs_description="predictions: list of float; references: list of float",
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}
            ),
        )

    def _compute(self, predictions, references):
        error = np.asarray(predictions, dtype=np.float64) - np.asarray(references, dtype=np.float64)
        return {"mae": float(np.mean(np.abs(error)))}
