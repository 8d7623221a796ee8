"""Sentiment classification: fine-tune a pretrained encoder, and compare it with a transformer trained from scratch.

    finetune train sentiment                                  # packaged MiniLM on packaged tweets, offline
    finetune train sentiment --model bert-base-uncased --dataset stanfordnlp/sst2 --text_column sentence
    python -m recipes.sentiment --config my.yaml --learning_rate 3e-5

Each step is a function you can call from your own code:

    from recipes.sentiment import SentimentConfig, build_data, build_pretrained, build_scratch, run
    config = SentimentConfig(output_dir="runs/mine", max_train_samples=2000)
    results = run(config)            # or compose build_data / build_pretrained / finetune.engine.train yourself
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Optional

from finetune import recipe
from finetune.config import TrainingConfig
from finetune.errors import UserError

TASK = "sentiment"
DEFAULT_CONFIG = Path(__file__).parent / "configs" / "sentiment.yaml"


@dataclass
class SentimentConfig(recipe.HubFields, TrainingConfig):
    hub_example: ClassVar[str] = "your-user/minilm-tweets"

    model: str = field(default="minilm", metadata={"help": "Hub name, local folder, or offline alias (minilm)."})
    dataset: str = field(default="tweets", metadata={"help": "Hub name, local csv/jsonl/parquet, or 'tweets' (packaged)."})
    text_column: str = field(default="text", metadata={"help": "Column holding the text."})
    label_column: str = field(default="label", metadata={"help": "Column holding the label."})
    labels: Optional[list[str]] = field(default=None, metadata={"help": "The expected label set; others are errors."})
    max_length: int = field(default=64, metadata={"help": "Truncate texts to this many tokens."})
    max_train_samples: Optional[int] = field(default=None, metadata={"help": "Train on the first N (shuffled) examples."})
    max_eval_samples: Optional[int] = field(default=None, metadata={"help": "Validate on N examples (the test split is always whole)."})
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


# ---- data ---------------------------------------------------------------------------------------------------

def build_data(config: SentimentConfig):
    """train / validation / test with `text` and integer `label`, plus label names and provenance notes."""
    from finetune.data.text import load_text_classification

    data = load_text_classification(config.dataset, config.text_column, config.label_column, config.labels, config.seed)
    return recipe.limit_samples(data, config)


# ---- models -------------------------------------------------------------------------------------------------

def build_pretrained(config: SentimentConfig, label_names: list[str]):
    """The pretrained checkpoint with a fresh classification head (LoRA-wrapped with --lora), and its tokenizer."""
    from finetune.models import load_sequence_classifier, load_tokenizer, resolve

    source = resolve(config.model)
    tokenizer = load_tokenizer(source)
    model = load_sequence_classifier(source, tokenizer, label_names)
    if config.lora:  # adapters on the attention's query/value; the new head stays fully trainable and is saved
        from finetune.lora import apply_lora

        model = apply_lora(model, config, "SEQ_CLS", base_path=source.path)
    return model, tokenizer, source


def build_scratch(config: SentimentConfig, tokenizer, label_names: list[str]):
    """The teaching transformer (finetune.scratch), same tokenizer, randomly initialised."""
    from finetune.models import head_labels
    from finetune.scratch import ScratchTransformerForSequenceClassification

    scratch_config = recipe.scratch_config(
        "text-classification", config.scratch_d_model, config.scratch_layers,
        vocab_size=len(tokenizer), max_position_embeddings=max(512, config.max_length),
        pad_token_id=tokenizer.pad_token_id, **head_labels(label_names))
    return ScratchTransformerForSequenceClassification(scratch_config)


# ---- the recipe ---------------------------------------------------------------------------------------------

def run(config: SentimentConfig) -> dict:
    import dataclasses

    from accelerate.utils import set_seed

    from finetune import engine, report
    from finetune.data.text import make_loaders, tokenize
    from finetune.evaluation import ClassificationEvaluator
    from finetune.lora import save_run_model
    from finetune.models import count_parameters, save_model

    state = recipe.start_run(config)
    data = build_data(config)
    set_seed(config.seed)  # before the model is built: the new head's initialisation is part of the run
    model, tokenizer, source = build_pretrained(config, data.label_names)
    run_dir = recipe.open_run_dir(config, state, [source.note, *data.notes])
    tokenized = tokenize(data.splits, tokenizer, config.max_length)
    loaders = make_loaders(tokenized, tokenizer, config.batch_size, config.eval_batch_size, config.seed)
    state.print(f"- train {len(tokenized['train'])} / validation {len(tokenized['validation'])} / test {len(tokenized['test'])} examples; labels {data.label_names}")

    evaluator = ClassificationEvaluator(len(data.label_names))
    results = {**recipe.results_header(TASK, "text-classification", config, source, data.notes[0], "accuracy"),
               "labels": data.label_names, "models": []}

    # 1. The pretrained model, fine-tuned.
    trained = engine.train(model, loaders, evaluator, config, run_dir, name="pretrained", metric_for_best="accuracy")
    save_run_model(trained, tokenizer, run_dir)  # the full model, or with --lora the adapter (finetune merge)
    results["models"].append(report.model_entry("pretrained", source.label, source.origin, ".", count_parameters(trained.model), trained))

    # 2. The from-scratch transformer: same split, same tokenizer, same number of steps and batch size.
    if config.compare:
        set_seed(config.seed)
        scratch = build_scratch(config, tokenizer, data.label_names)
        scratch_config = dataclasses.replace(config, learning_rate=config.scratch_learning_rate)
        trained_scratch = engine.train(scratch, loaders, evaluator, scratch_config, run_dir, name="scratch", metric_for_best="accuracy")
        save_model(trained_scratch, tokenizer, run_dir / "scratch")
        results["models"].append(report.model_entry("scratch", "scratch-transformer", "finetune.scratch", "scratch",
                                                    count_parameters(trained_scratch.model), trained_scratch))

    recipe.finish_run(run_dir, config, results,
                      f'(results.json, learning_curves.png, the model: finetune predict {run_dir} "some text")')
    return results


def main(argv=None) -> int:
    return recipe.main(SentimentConfig, run, DEFAULT_CONFIG, argv)


if __name__ == "__main__":
    sys.exit(main())
