"""Summarization: the translation recipe (recipes/translation.py) with a summary for a target and ROUGE for a score.

    finetune train summarization                        # offline: CoNLL-2003 Reuters bodies -> headlines, BERT2BERT
    finetune train summarization --model facebook/bart-base --dataset cnn_dailymail --dataset_config 3.0.0
    finetune train summarization --model t5-small --source_prefix "summarize: " --dataset xsum
    finetune train summarization --dataset notes.csv --text_column body --summary_column title
    finetune predict runs/summarization --file articles.txt

Same steps, same flags as `finetune train translation` (plus run_summarization's --text_column / --summary_column,
which name the same two columns as --source_column / --target_column); only the defaults differ
(recipes/configs/summarization.yaml: longer sources, short targets) and the metric: ROUGE-1/2/L/Lsum with
stemming, the best weights picked on ROUGE-L of --generate_eval_samples validation articles.

    from recipes.summarization import SummarizationConfig, run
    results = run(SummarizationConfig(output_dir="runs/mine", max_steps=100))
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Optional

from finetune.core.config import defaults_from
from finetune.core.errors import UserError
from finetune.tasks import kit, registry
from recipes import translation
from recipes.translation import TranslationConfig, build_pretrained, build_scratch  # noqa: F401

TASK = "summarization"
METRIC_FOR_BEST = registry.get(TASK).metric  # ROUGE-L of the generated validation sample


@defaults_from(Path(__file__).parent / "configs" / "summarization.yaml")
@dataclass
class SummarizationConfig(TranslationConfig):
    hub_example: ClassVar[str] = "your-user/bert2bert-conll-headlines"

    dataset: str = field(
        default="conll-headlines",
        metadata={"help": "conll-headlines (packaged), a Hub name (cnn_dailymail, xsum, samsum), or a local file."},
    )
    text_column: Optional[str] = field(default=None, metadata={"help": "Column holding the text to summarize."})
    summary_column: Optional[str] = field(default=None, metadata={"help": "Column holding the summary."})

    def __post_init__(self):
        super().__post_init__()
        for alias, name in (("text_column", "source_column"), ("summary_column", "target_column")):
            if getattr(self, alias) and getattr(self, name) and getattr(self, alias) != getattr(self, name):
                raise UserError(f"--{alias} and --{name} name the same column: give one of them")


def build_data(config: SummarizationConfig):
    """train / validation / test (article, summary) pairs as `source` / `target` strings."""
    import dataclasses

    columns = dict(
        source_column=config.source_column or config.text_column,
        target_column=config.target_column or config.summary_column,
    )
    return translation.build_data(dataclasses.replace(config, **columns), task=TASK)


@kit.holds_run_dir
def run(config: SummarizationConfig) -> dict:
    import dataclasses

    columns = dict(
        source_column=config.source_column or config.text_column,
        target_column=config.target_column or config.summary_column,
    )
    return translation.run(dataclasses.replace(config, **columns), task=TASK)


def main(argv=None) -> int:
    return kit.main(SummarizationConfig, run, argv)


if __name__ == "__main__":
    sys.exit(main())
