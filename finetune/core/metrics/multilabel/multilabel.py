"""Multi-label scores over 0/1 indicator rows (one column per label).

micro F1 pools every (example, label) decision; macro F1 averages the per-label F1 (a label never true and never
predicted scores 0, as scikit-learn's zero_division=0); subset accuracy counts examples whose whole label set is
exact."""

import datasets
import evaluate
import numpy as np


class MultiLabel(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="micro / macro F1 and subset accuracy of multi-label predictions.",
            citation="",
            inputs_description="predictions: list of 0/1 lists; references: list of 0/1 lists (same length K)",
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("int64")),
                    "references": datasets.Sequence(datasets.Value("int64")),
                }
            ),
        )

    def _compute(self, predictions, references):
        predictions, references = np.asarray(predictions, dtype=bool), np.asarray(references, dtype=bool)
        tp = (predictions & references).sum(axis=0)  # (K,) per label
        fp = (predictions & ~references).sum(axis=0)
        fn = (~predictions & references).sum(axis=0)
        per_label = np.where(tp > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0)
        micro = 2 * tp.sum() / (2 * tp.sum() + fp.sum() + fn.sum()) if tp.sum() else 0.0
        return {
            "f1_micro": float(micro),
            "f1_macro": float(per_label.mean()),
            "subset_accuracy": float((predictions == references).all(axis=1).mean()),
        }
