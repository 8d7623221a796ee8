"""A task that exists only in the tests: the sentiment recipe under another name, registered by test_house_plan.py
to show that one module plus one registry entry is all a new task needs."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from finetune.tasks import kit
from recipes import text_classification
from recipes.sentiment import SentimentConfig

TASK = "tiny_task"
METRIC_FOR_BEST = "accuracy"


@dataclass
class TinyTaskConfig(SentimentConfig):
    pass


def run(config: TinyTaskConfig) -> dict:
    return text_classification.run(config, task=TASK)


def main(argv=None) -> int:
    return kit.main(TinyTaskConfig, run, argv)


if __name__ == "__main__":
    sys.exit(main())
