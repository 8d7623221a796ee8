"""The tasks `finetune train` knows: one entry each, read by the CLI, search, study, runs and the model card.

    name                     recipe module                     pipeline tag            selects on (direction: metrics)
    sentiment                recipes.sentiment                 text-classification     accuracy
    text_classification      recipes.text_classification       text-classification     by problem type (DEFAULT_METRIC)
    token_classification     recipes.token_classification      token-classification    f1 (entity level)
    question_answering       recipes.question_answering        question-answering      f1 (SQuAD's, token overlap)
    text_generation          recipes.text_generation           text-generation         perplexity (lower is better)
    image_classification     recipes.image_classification      image-classification    accuracy
    translation              recipes.translation               translation             bleu (sacreBLEU, generated)
    summarization            recipes.summarization             summarization           rougeL (generated)

Adding a task is one recipe module plus one `register(Task(...))` line below. Modules are imported only when a
task is used, so `finetune --help` stays fast.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from finetune.core.errors import UserError
from finetune.core.metrics import greater_is_better


@dataclass(frozen=True)
class Task:
    name: str  # finetune train NAME
    module: str  # the recipe module: a config dataclass, run(config), main(argv)
    config_class: str  # the name of its config dataclass in that module
    pipeline_tag: str  # the Hub's task name: the kind of model a run holds, and the card's pipeline
    metric: Optional[str]  # the validation metric that selects the best weights; None: it depends on the data

    def load(self):
        return importlib.import_module(self.module)

    @property
    def config_cls(self):
        return getattr(self.load(), self.config_class)

    @property
    def greater_is_better(self) -> Optional[bool]:
        return greater_is_better(self.metric) if self.metric else None

    @property
    def defaults_yaml(self) -> Optional[Path]:
        """The task's defaults file (recipes/configs/NAME.yaml), read by the config class itself."""
        return getattr(self.config_cls, "defaults_yaml", None)


TASKS: dict[str, Task] = {}


def register(task: Task) -> Task:
    TASKS[task.name] = task
    return task


def names() -> list[str]:
    return sorted(TASKS)


def get(name: str) -> Task:
    """The registered task `name`, or a one-line error listing the tasks there are."""
    if name not in TASKS:
        raise UserError(f"unknown task {name!r}: use one of {', '.join(names())}")
    return TASKS[name]


register(Task("sentiment", "recipes.sentiment", "SentimentConfig", "text-classification", "accuracy"))
register(
    Task("text_classification", "recipes.text_classification", "TextClassificationConfig", "text-classification", None)
)
register(
    Task(
        "token_classification",
        "recipes.token_classification",
        "TokenClassificationConfig",
        "token-classification",
        "f1",
    )
)
register(
    Task("question_answering", "recipes.question_answering", "QuestionAnsweringConfig", "question-answering", "f1")
)
register(Task("text_generation", "recipes.text_generation", "TextGenerationConfig", "text-generation", "perplexity"))
register(
    Task(
        "image_classification",
        "recipes.image_classification",
        "ImageClassificationConfig",
        "image-classification",
        "accuracy",
    )
)
register(Task("translation", "recipes.translation", "TranslationConfig", "translation", "bleu"))
register(Task("summarization", "recipes.summarization", "SummarizationConfig", "summarization", "rougeL"))
