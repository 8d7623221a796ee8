"""The nine GLUE tasks (Wang et al. 2018), as `--glue_task NAME` sets them: dataset, config, columns, problem type
and metrics in one flag.

On the Hub they are configurations of `nyu-mll/glue` (columns as below; test labels hidden as -1, so a test split is
carved from train as for any dataset without test labels). A local folder of GLUE's own TSV files (train.tsv,
dev.tsv, dev_matched.tsv, ...) uses GLUE's original column names (`tsv_columns`). MNLI is selected on
validation_matched and also reported on validation_mismatched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from finetune.core.errors import UserError

GLUE_DATASET = "nyu-mll/glue"


@dataclass(frozen=True)
class GlueTask:
    text: str  # first text column on the Hub
    pair: Optional[str]  # second text column, for sentence-pair tasks
    problem_type: str
    metric_for_best: str
    extra_metrics: tuple = ()  # beyond accuracy and F1 (classification) or the regression set
    tsv_columns: tuple = ()  # (text, pair, label) in GLUE's original TSV files
    aliases: tuple = ()  # (Hub split, our split)
    extra_splits: tuple = ()  # evaluated and reported besides test


GLUE_TASKS = {
    "cola": GlueTask(
        "sentence", None, "single_label", "matthews_correlation", ("matthews_correlation",), ("sentence", None, "label")
    ),
    "sst2": GlueTask("sentence", None, "single_label", "accuracy", (), ("sentence", None, "label")),
    "mrpc": GlueTask("sentence1", "sentence2", "single_label", "f1", (), ("#1 String", "#2 String", "Quality")),
    "qqp": GlueTask("question1", "question2", "single_label", "f1", (), ("question1", "question2", "is_duplicate")),
    "stsb": GlueTask("sentence1", "sentence2", "regression", "pearson", (), ("sentence1", "sentence2", "score")),
    "mnli": GlueTask(
        "premise",
        "hypothesis",
        "single_label",
        "accuracy",
        (),
        ("sentence1", "sentence2", "gold_label"),
        aliases=(("validation_matched", "validation"), ("test_matched", "test")),
        extra_splits=("validation_mismatched",),
    ),
    "qnli": GlueTask("question", "sentence", "single_label", "accuracy", (), ("question", "sentence", "label")),
    "rte": GlueTask("sentence1", "sentence2", "single_label", "accuracy", (), ("sentence1", "sentence2", "label")),
    "wnli": GlueTask("sentence1", "sentence2", "single_label", "accuracy", (), ("sentence1", "sentence2", "label")),
}


def glue_task(name: str) -> GlueTask:
    if name not in GLUE_TASKS:
        raise UserError(f"unknown --glue_task {name!r}: use one of {', '.join(GLUE_TASKS)}")
    return GLUE_TASKS[name]


def glue_columns(task: GlueTask, dataset: str) -> tuple[str, Optional[str], str]:
    """(text, pair, label) columns: GLUE's TSV names for a local folder of .tsv files, the Hub's otherwise."""
    from pathlib import Path

    path = Path(dataset).expanduser()
    if task.tsv_columns and (path.suffix == ".tsv" or (path.is_dir() and any(path.glob("*.tsv")))):
        return task.tsv_columns
    return task.text, task.pair, "label"
