"""Perplexity from summed token losses: exp(total negative log-likelihood / number of predicted tokens).

Unlike the Hub's `perplexity` metric, which runs a model itself, this one takes what the training loop
already computed, so the same forward pass serves the loss and the metric.
"""

import math

import datasets
import evaluate


class Perplexity(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="exp(sum of token negative log-likelihoods / token count).",
            citation="",
            inputs_description="predictions: per-sequence summed NLL (float); "
            "references: per-sequence token count (int)",
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references):
        tokens = sum(references)
        nll = sum(predictions) / max(tokens, 1)
        return {"perplexity": float(math.exp(min(nll, 700))), "loss": float(nll)}
