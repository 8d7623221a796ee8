"""Sentiment classification: the tweets preset of the text-classification recipe (recipes/text_classification.py).

    finetune train sentiment                                  # packaged MiniLM on packaged tweets, offline
    finetune train sentiment --model bert-base-uncased --dataset stanfordnlp/sst2 --text_column sentence
    python -m recipes.sentiment --config my.yaml --learning_rate 3e-5

Same steps, same flags as `finetune train text_classification`; only the defaults differ
(recipes/configs/sentiment.yaml:
the packaged tweets, 64 tokens, 12,000 training tweets). Each step is a function you can call from your own code:

    from recipes.sentiment import SentimentConfig, build_data, build_pretrained, build_scratch, run
    config = SentimentConfig(output_dir="runs/mine", max_train_samples=2000)
    results = run(config)            # or compose build_data / build_pretrained / finetune.core.engine.train yourself
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from finetune.core.config import defaults_from
from finetune.tasks import kit, registry
from recipes import text_classification
from recipes.text_classification import TextClassificationConfig, build_data, build_pretrained, build_scratch  # noqa: F401

TASK = "sentiment"
# The validation metric that picks the best weights (and that finetune search optimises); its direction is
# finetune.core.metrics.greater_is_better's. Registered with the task in finetune/tasks/registry.py.
METRIC_FOR_BEST = registry.get(TASK).metric


@defaults_from(Path(__file__).parent / "configs" / "sentiment.yaml")
@dataclass
class SentimentConfig(TextClassificationConfig):
    max_length: int = field(default=64, metadata={"help": "Truncate texts to this many tokens."})


@kit.holds_run_dir
def run(config: SentimentConfig) -> dict:
    return text_classification.run(config, task=TASK)


def main(argv=None) -> int:
    return kit.main(SentimentConfig, run, argv)


if __name__ == "__main__":
    sys.exit(main())
