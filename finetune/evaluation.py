"""Evaluators: what the engine's evaluation loop collects from each batch, and the metrics it computes.

The engine stays task-free: it runs the model over a loader and hands each (batch, outputs) pair to an
evaluator, together with `gather`, Accelerate's `gather_for_metrics`, which collects the values from every
process and drops the duplicates that even sharding adds to the last batch.
"""

from __future__ import annotations

import torch

from finetune.metrics import load_metric


class ClassificationEvaluator:
    """accuracy, and F1 (binary for two labels, macro-averaged for more)."""

    def __init__(self, num_labels: int):
        self.average = "binary" if num_labels == 2 else "macro"
        self._metrics = None
        self.reset()

    def reset(self):
        self.predictions, self.references = [], []

    def add(self, batch, outputs, gather):
        predictions, references = gather((outputs.logits.argmax(dim=-1), batch["labels"]))
        self.predictions.append(predictions.cpu())
        self.references.append(references.cpu())

    def compute(self) -> dict:
        if self._metrics is None:
            self._metrics = (load_metric("accuracy"), load_metric("f1"))
        accuracy, f1 = self._metrics
        p = torch.cat(self.predictions).tolist()
        r = torch.cat(self.references).tolist()
        return {**accuracy.compute(predictions=p, references=r), **f1.compute(predictions=p, references=r, average=self.average)}


class LanguageModelEvaluator:
    """Perplexity over the predicted tokens (labels != -100), with the usual one-token shift."""

    def __init__(self):
        self._metric = None
        self.reset()

    def reset(self):
        self.nll, self.tokens = [], []

    def add(self, batch, outputs, gather):
        logits = outputs.logits[:, :-1].float()  # (B, T-1, V): position t predicts token t+1
        labels = batch["labels"][:, 1:]  # (B, T-1)
        token_nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100, reduction="none")
        nll, tokens = gather((token_nll.sum(dim=1), (labels != -100).sum(dim=1)))  # (B,) each
        self.nll.append(nll.double().cpu())
        self.tokens.append(tokens.cpu())

    def compute(self) -> dict:
        if self._metric is None:
            self._metric = load_metric("perplexity")
        return self._metric.compute(predictions=torch.cat(self.nll).tolist(), references=torch.cat(self.tokens).tolist())


class TokenClassificationEvaluator:
    """Entity precision / recall / F1 (seqeval's semantics, micro over entities) and tag accuracy, per word.

    Only positions with a label (not -100) are scored: the first sub-token of each word in validation and test.
    `per_type` holds the last compute()'s scores by entity type (the model card's table).
    """

    def __init__(self, label_names: list[str], max_length: int, mode: str = "lenient", scheme: str = "IOB2"):
        self.label_names, self.max_length = label_names, max_length
        self.mode, self.scheme = mode, scheme
        self._metric = None
        self.per_type = {}
        self.reset()

    def reset(self):
        self.predictions, self.references = [], []

    def add(self, batch, outputs, gather):
        # Batches are padded per batch, so each process has its own width: pad to max_length before gathering.
        predictions = outputs.logits.argmax(dim=-1)  # (B, T)
        labels = batch["labels"]  # (B, T), -100 where nothing is scored
        width = self.max_length - labels.shape[1]
        predictions = torch.nn.functional.pad(predictions, (0, width), value=-100)
        labels = torch.nn.functional.pad(labels, (0, width), value=-100)
        predictions, labels = gather((predictions, labels))
        for p, r in zip(predictions.cpu().tolist(), labels.cpu().tolist()):
            scored = [(pi, ri) for pi, ri in zip(p, r) if ri != -100]
            self.predictions.append([self.label_names[pi] for pi, _ in scored])
            self.references.append([self.label_names[ri] for _, ri in scored])

    def compute(self) -> dict:
        if self._metric is None:
            self._metric = load_metric("entity_f1")
        scores = self._metric.compute(predictions=self.predictions, references=self.references, mode=self.mode, scheme=self.scheme)
        self.per_type = scores.pop("per_type")
        return scores
