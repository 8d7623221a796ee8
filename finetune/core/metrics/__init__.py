"""Metric modules for the `evaluate` library, shipped with the package so they work offline.

`evaluate.load("accuracy")` fetches its script from the Hub, which fails offline with a misleading message.
Each folder here is a complete evaluate module (folder/folder.py), loaded by path. Hub metric names are used
only for names we don't ship, and only when online.
"""

from __future__ import annotations

from pathlib import Path

from finetune.core.environment import is_offline
from finetune.core.errors import UserError

SHIPPED = {p.name for p in Path(__file__).parent.iterdir() if (p / f"{p.name}.py").is_file()}

# Every metric a run can report, with its direction: True where a larger value is better. Stated for each name,
# not as a list of exceptions, so that a new metric (rmse, cer, ...) cannot be maximised by default.
GREATER_IS_BETTER = {
    "accuracy": True,
    "subset_accuracy": True,
    "f1": True,
    "f1_macro": True,
    "f1_micro": True,
    "precision": True,
    "recall": True,
    "matthews_correlation": True,
    "pearson": True,
    "spearman": True,
    "mse": False,
    "mae": False,
    "loss": False,
    "perplexity": False,
    # extractive question answering (squad, squad_v2): percentages of questions, the best-threshold figures included
    "exact_match": True,
    "exact": True,
    "HasAns_exact": True,
    "HasAns_f1": True,
    "NoAns_exact": True,
    "NoAns_f1": True,
    "best_exact": True,
    "best_f1": True,
    "bleu": True,  # translation (the sacrebleu module, 0..100)
    "chrf": True,
    "rouge1": True,  # summarization (the rouge module, 0..1)
    "rouge2": True,
    "rougeL": True,
    "rougeLsum": True,
}


def greater_is_better(metric: str) -> bool:
    """Whether a larger `metric` is better: what selects the best weights, early stopping and search follow."""
    if metric not in GREATER_IS_BETTER:
        raise UserError(
            f"finetune does not know whether a larger {metric!r} is better: use one of "
            f"{', '.join(sorted(GREATER_IS_BETTER))} (or add it to finetune/core/metrics: GREATER_IS_BETTER)"
        )
    return GREATER_IS_BETTER[metric]


def load_metric(name: str):
    import evaluate  # ~9 s to import: only when a run evaluates

    if name in SHIPPED:
        return evaluate.load(str(Path(__file__).parent / name))

    if is_offline():
        raise UserError(
            f"metric {name!r} is not shipped and HF_HUB_OFFLINE=1 forbids fetching it: use one of {sorted(SHIPPED)}"
        )
    try:
        return evaluate.load(name)
    except Exception as err:
        raise UserError(f"could not load metric {name!r}: {str(err).splitlines()[0]}") from None
