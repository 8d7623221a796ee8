"""Class-weighted losses, for skewed label sets: `--class_weights balanced`.

The engine's contract is `model(**batch).loss`, so the weighting lives in the model's forward, not in the loop:
`use_weighted_loss` registers a forward hook that recomputes `outputs.loss` from the logits with the weights.
The model class is untouched (save_pretrained and from_pretrained see a plain model; the weights are a training
choice, not part of the model), and the hook sits on the outermost module, so it also works under LoRA and DDP.

Weights, as scikit-learn's `compute_class_weight("balanced")` defines them: class k weighs n / (K * n_k), so every
class contributes the same total to the loss. For multi-label, each label's positive examples weigh
negatives / positives (BCEWithLogitsLoss's `pos_weight`), as if positives and negatives were equally common.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def balanced_class_weights(label_ids, num_labels: int) -> torch.Tensor:
    """(K,) n / (K * count_k) from training label ids; a class absent from train gets weight 1."""
    counts = torch.bincount(torch.as_tensor(label_ids, dtype=torch.long), minlength=num_labels).double()
    weights = counts.sum() / (num_labels * counts.clamp(min=1))
    return torch.where(counts > 0, weights, torch.ones_like(weights)).float()


def positive_weights(multi_hot) -> torch.Tensor:
    """(K,) negatives / positives per label from (N, K) 0/1 training labels; a label never positive gets 1."""
    labels = torch.as_tensor(multi_hot, dtype=torch.double)
    positives = labels.sum(dim=0)
    negatives = labels.shape[0] - positives
    return torch.where(positives > 0, negatives / positives.clamp(min=1), torch.ones_like(positives)).float()


def weighted_loss(logits: torch.Tensor, labels: torch.Tensor, problem_type: str, weights: torch.Tensor) -> torch.Tensor:
    """logits (B, K); labels (B,) ids for single_label, (B, K) 0/1 floats for multi_label."""
    weights = weights.to(device=logits.device, dtype=torch.float32)
    if problem_type == "single_label":
        return F.cross_entropy(logits.float(), labels.long(), weight=weights)
    if problem_type == "multi_label":
        return F.binary_cross_entropy_with_logits(logits.float(), labels.float(), pos_weight=weights)
    raise ValueError(f"class weights apply to single_label or multi_label, not {problem_type!r}")


def use_weighted_loss(model, problem_type: str, weights: torch.Tensor):
    """Make `model(**batch, labels=...).loss` the weighted loss. Returns the hook's handle (`.remove()` undoes it)."""

    def hook(module, args, kwargs, outputs):
        labels = kwargs.get("labels")
        if labels is not None:
            outputs["loss"] = weighted_loss(outputs["logits"], labels, problem_type, weights)
        return outputs

    return model.register_forward_hook(hook, with_kwargs=True)
