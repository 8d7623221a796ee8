"""Pretraining the from-scratch transformer yourself: what makes BERT BERT, at the size of our teaching model.

    finetune pretrain mlm                          # masked-LM on tweets + CoNLL train + KJV, about 10 minutes here
    finetune pretrain mlm --corpus my_texts.txt --whole_word_mask true
    finetune pretrain clm --corpus kjv             # next-token prediction for the decoder-only LM
    finetune train sentiment --scratch_init runs/pretrain_mlm      # fine-tune the scratch model from it

mlm (BERT, Devlin et al. 2019, section 3.1): in every text, each token is selected with probability 15% ([CLS],
[SEP] and padding never are); of the selected ones 80% become [MASK], 10% a random token, 10% stay as they were;
the encoder predicts the original token at the selected positions only. transformers' DataCollatorForLanguageModeling
does the selection (finetune.data.corpora.MaskingCollator), afresh for every epoch; the held-out text is masked
once with a fixed seed, so its masked-token loss and accuracy are comparable from one evaluation to the next.

clm (GPT): predict every next token of packed blocks of text; the decoder-only LM of recipes/text_generation.py.

The model is finetune.models.scratch's (ScratchTransformerForMaskedLM / ForCausalLM) at the sizes the recipes
build their scratch model with (--scratch_d_model, --scratch_layers, the same tokenizer), so that every recipe's
`--scratch_init RUN` starts from these weights. Training is finetune.core.engine.train: checkpoints, --resume,
trackers and progress like any run. The run directory holds the model at its top level:
`pipeline("fill-mask", model=RUN)` loads it after `import finetune.models.scratch`.

    from recipes.pretraining import PretrainConfig, build_data, build_model, run
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Optional

from finetune.core import engine
from finetune.core.atomic_io import atomic_write_json
from finetune.core.config import TrainingConfig, defaults_from
from finetune.core.errors import UserError
from finetune.core.evaluation import LanguageModelEvaluator, MaskedLMEvaluator
from finetune.data.corpora import (
    MaskingCollator,
    carve_held_out,
    load_pretraining_corpus,
    make_mlm_loaders,
    mask_once,
    tokenize_texts,
)
from finetune.data.lm import make_blocks, make_lm_loaders
from finetune.models.generate import generate_texts
from finetune.models.loading import count_parameters, load_tokenizer, resolve, save_model
from finetune.reporting import report
from finetune.tasks import kit

TASK = "pretraining"
COMMAND = "finetune pretrain"  # what the run directory's lock says is running
OBJECTIVES = ("mlm", "clm")
# The tokenizer of the recipes each objective feeds: MiniLM's for the encoders of sentiment, text_classification
# and token_classification; GPT-2's for a decoder-only LM (text_generation with --model gpt2, or a local GPT-2).
DEFAULT_TOKENIZER = {"mlm": "minilm", "clm": "gpt2-tokenizer"}
PIPELINE_TAG = {"mlm": "fill-mask", "clm": "text-generation"}
# What the run's last line suggests next (a clm run needs a --model whose tokenizer it was pretrained with)
FINE_TUNE = {"mlm": "finetune train sentiment", "clm": "finetune train text_generation --model gpt2"}
METRIC_FOR_BEST = "loss"  # held-out masked-token (mlm) or next-token (clm) cross-entropy: lower is better


@defaults_from(Path(__file__).parent / "configs" / "pretraining.yaml")
@dataclass
class PretrainConfig(kit.HubFields, TrainingConfig):
    hub_example: ClassVar[str] = "your-user/scratch-mlm-tweets"

    objective: str = field(default="mlm", metadata={"help": "mlm (BERT's masked LM, the encoder) | clm (next token)."})
    corpus: str = field(
        default="tweets,conll,kjv",
        metadata={
            "help": "Comma-separated: tweets | conll | kjv (packaged), a .txt file or folder (one text per line), "
            "or a dataset file / Hub name (its train split's --text_column). See finetune/data/corpora.py."
        },
    )
    text_column: str = field(default="text", metadata={"help": "Column holding the text, for dataset corpora."})
    sentiment_split_seeds: list[int] = field(
        default_factory=lambda: [0, 1, 2, 42],
        metadata={
            "help": "The tweets corpus leaves out what the sentiment split holds out (validation, test) for each "
            "of these --seed values of the fine-tuning run."
        },
    )
    tokenizer: Optional[str] = field(
        default=None,
        metadata={
            "help": "Tokenizer: a model name, folder or alias, which must be the fine-tuning recipe's "
            "(default: minilm for mlm, gpt2-tokenizer for clm)."
        },
    )
    max_length: int = field(
        default=128, metadata={"help": "mlm: truncate texts to this many tokens; clm: tokens per packed block."}
    )
    mlm_probability: float = field(default=0.15, metadata={"help": "Share of tokens selected for prediction."})
    mask_replace_prob: float = field(default=0.8, metadata={"help": "Of the selected tokens: share made [MASK]."})
    random_replace_prob: float = field(
        default=0.1, metadata={"help": "Of the selected tokens: share made a random token (the rest stay)."}
    )
    whole_word_mask: bool = field(
        default=False,
        metadata={"help": "Select whole words (all their pieces); transformers then uses [MASK] only (no 10/10)."},
    )
    max_train_samples: Optional[int] = field(default=None, metadata={"help": "Train on the first N (shuffled) texts."})
    max_eval_samples: int = field(
        default=1000, metadata={"help": "Held-out texts (at most a tenth of the corpus), masked once with --seed."}
    )
    prompts: Optional[list[str]] = field(
        default=None,
        metadata={
            "resume": "may_change",
            "help": "Fill-mask prompts with [MASK] (mlm) or prompts to continue (clm), shown before and after.",
        },
    )
    top_k: int = field(default=5, metadata={"resume": "may_change", "help": "Fill-mask guesses shown per prompt."})
    scratch_d_model: int = field(default=256, metadata={"help": "Width of the model (= the recipes' scratch model)."})
    scratch_layers: int = field(default=4, metadata={"help": "Blocks of the model (= the recipes' scratch model)."})

    def __post_init__(self):
        super().__post_init__()
        if self.objective not in OBJECTIVES:
            raise UserError(f"the objective must be mlm or clm, got {self.objective!r}: finetune pretrain mlm")
        if self.lora:
            raise UserError("--lora adapts a pretrained model; pretraining trains every weight: drop --lora")
        if self.max_length < 8:
            raise UserError(f"--max_length must be at least 8, got {self.max_length}")
        for name in ("mlm_probability", "mask_replace_prob", "random_replace_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise UserError(f"--{name} must be in [0, 1], got {getattr(self, name)}")
        if self.mlm_probability == 0:
            raise UserError("--mlm_probability 0 selects no token to predict: use e.g. 0.15")
        if self.mask_replace_prob + self.random_replace_prob > 1:
            raise UserError("--mask_replace_prob + --random_replace_prob must be at most 1 (the rest stay as they are)")
        if self.whole_word_mask and self.objective != "mlm":
            raise UserError("--whole_word_mask applies to mlm: drop it for clm")
        for name in ("max_train_samples", "max_eval_samples", "top_k"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise UserError(f"--{name} must be at least 1, got {getattr(self, name)}")
        self.compare = False  # there is no second model here: (the field is TrainingConfig's)


# ---- data ---------------------------------------------------------------------------------------------------


def build_data(config: PretrainConfig):
    """The corpus (finetune.data.corpora: deduplicated, the fine-tuning task's held-out text left out) and its
    train / validation texts."""
    corpus = load_pretraining_corpus(config.corpus, config.text_column, tuple(config.sentiment_split_seeds))
    splits = carve_held_out(corpus.texts, config.max_eval_samples, config.seed, config.max_train_samples)
    return corpus, splits


def build_tokenizer(config: PretrainConfig):
    source = resolve(config.tokenizer or DEFAULT_TOKENIZER[config.objective])
    tokenizer = load_tokenizer(source)
    if config.objective == "mlm" and tokenizer.mask_token is None:
        raise UserError(f"the tokenizer of {source.name!r} has no mask token: mlm needs a BERT-style tokenizer")
    return tokenizer, source


# ---- the model ----------------------------------------------------------------------------------------------


def build_model(config: PretrainConfig, tokenizer):
    """The teaching transformer with a masked-LM head (mlm) or as a decoder-only LM (clm), randomly initialised,
    shaped exactly as the recipes' build_scratch shapes it (kit.scratch_config), so its weights load there."""
    # here: it imports transformers' modelling code (~2 s)
    from finetune.models.scratch import ScratchTransformerForCausalLM, ScratchTransformerForMaskedLM

    if config.objective == "mlm":
        scratch_config = kit.scratch_config(
            "text-classification",  # the preset of the encoders (classification, tagging): the same sizes
            config.scratch_d_model,
            config.scratch_layers,
            vocab_size=len(tokenizer),
            max_position_embeddings=max(512, config.max_length),
            pad_token_id=tokenizer.pad_token_id,
        )
        return ScratchTransformerForMaskedLM(scratch_config)
    scratch_config = kit.scratch_config(
        "text-generation",
        config.scratch_d_model,
        config.scratch_layers,
        vocab_size=len(tokenizer),
        max_position_embeddings=max(256, config.max_length),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return ScratchTransformerForCausalLM(scratch_config)


def make_loaders(config: PretrainConfig, splits, tokenizer):
    """mlm: texts -> tokens -> masked batches (held-out masked once, seeded); clm: packed blocks of max_length."""
    if config.objective == "clm":
        blocks = make_blocks(splits, tokenizer, config.max_length, "group")
        return make_lm_loaders(blocks, tokenizer, config.batch_size, config.eval_batch_size, config.seed), blocks
    masking = dict(
        mlm_probability=config.mlm_probability,
        mask_replace_prob=1.0 if config.whole_word_mask else config.mask_replace_prob,
        random_replace_prob=0.0 if config.whole_word_mask else config.random_replace_prob,
        whole_word_mask=config.whole_word_mask,
    )
    tokenized = tokenize_texts(splits, tokenizer, config.max_length, config.whole_word_mask)
    held_out = mask_once(tokenized["validation"], MaskingCollator(tokenizer, **masking, seed=config.seed))
    train_collator = MaskingCollator(tokenizer, **masking, seed=config.seed)  # afresh each epoch, resumable
    loaders = make_mlm_loaders(
        tokenized, held_out, tokenizer, train_collator, config.batch_size, config.eval_batch_size, config.seed
    )
    return loaders, tokenized


DEFAULT_PROMPTS = {
    "mlm": [
        "the flight was [MASK] .",
        "i love my new [MASK] !",
        "the president of the united [MASK] .",
        "and god said , let there be [MASK] .",
        "self - driving cars are [MASK] .",
    ],
    "clm": ["the flight was", "In the beginning", "The president said"],
}


def show_examples(config: PretrainConfig, model, tokenizer) -> list:
    """mlm: the top_k fill-mask guesses for each prompt (transformers' fill-mask pipeline); clm: greedy continuations.
    `model` is a model or a saved run folder (which the pipeline loads, as a user would)."""
    prompts = config.prompts or DEFAULT_PROMPTS[config.objective]
    if config.objective == "clm":
        return generate_texts(model, tokenizer, prompts, 20, do_sample=False)
    from transformers import pipeline

    prompts = [p.replace("[MASK]", tokenizer.mask_token) for p in prompts]
    if any(p.count(tokenizer.mask_token) != 1 for p in prompts):
        raise UserError(
            f"every --prompts entry needs exactly one {tokenizer.mask_token}, e.g. 'the flight was [MASK] .'"
        )
    fill = pipeline("fill-mask", model=model, tokenizer=tokenizer, device="cpu")
    was_training = getattr(model, "training", False)
    guesses = [
        {"prompt": p, "top": [[g["token_str"], round(g["score"], 4)] for g in fill(p, top_k=config.top_k)]}
        for p in prompts
    ]
    if was_training:
        model.train()
    return guesses


def describe_examples(examples: list, objective: str) -> list[str]:
    if objective == "clm":
        return [f"    {text!r}" for text in examples]
    return [f"    {e['prompt']:45s} -> {', '.join(f'{w} ({s:.3f})' for w, s in e['top'])}" for e in examples]


# ---- the recipe ---------------------------------------------------------------------------------------------


@kit.holds_run_dir
def run(config: PretrainConfig) -> dict:
    from accelerate.utils import set_seed

    started = time.perf_counter()
    state = kit.start_run(config)
    tokenizer, source = build_tokenizer(config)
    corpus, splits = build_data(config)
    set_seed(config.seed)  # before the model is built: its initialisation is part of the run
    model = build_model(config, tokenizer)
    before_examples = show_examples(config, model, tokenizer) if state.is_main_process else []
    run_dir = kit.open_run_dir(config, state, [source.note, *corpus.notes])
    loaders, data = make_loaders(config, splits, tokenizer)
    sizes = {name: len(split) for name, split in data.items()}
    state.print(
        f"- {config.objective}: {len(corpus.texts)} texts -> train {sizes['train']} / held-out {sizes['validation']} "
        f"{'blocks' if config.objective == 'clm' else 'texts'}; {count_parameters(model):,} parameters "
        f"(d_model {config.scratch_d_model} x {config.scratch_layers} blocks)"
    )
    if config.objective == "mlm":
        state.print(
            f"- masking: {config.mlm_probability:.0%} of tokens selected"
            + (
                " by whole words, all of them [MASK]"
                if config.whole_word_mask
                else f"; of those {config.mask_replace_prob:.0%} [MASK], {config.random_replace_prob:.0%} random, "
                f"{1 - config.mask_replace_prob - config.random_replace_prob:.0%} kept"
            )
            + f"; held-out text masked once (seed {config.seed})"
        )
    budget = f"{config.max_steps} steps" if config.max_steps else f"{config.num_epochs} epoch(s)"
    state.print(f"- budget: {budget} of {config.batch_size} texts (recipes/configs/pretraining.yaml says how long)")
    evaluator = MaskedLMEvaluator() if config.objective == "mlm" else LanguageModelEvaluator()

    # 0. The untrained model on the held-out text: the curves' first point and the "before" numbers.
    loaders["test"] = loaders["validation"]  # after training: the best weights on the same held-out text, in fp32
    before = held_out_metrics(model, loaders["validation"], evaluator, config, run_dir)
    set_seed(config.seed)  # training does not depend on the evaluation above

    # 1. Pretraining, through the engine every recipe trains with.
    trained = engine.train(
        model, loaders, evaluator, config, run_dir, name="pretraining", metric_for_best=METRIC_FOR_BEST
    )
    save_model(trained, tokenizer, run_dir)  # the top level: pipeline("fill-mask", model=run_dir) loads it
    after_examples = show_examples(config, str(run_dir) if config.objective == "mlm" else trained.model, tokenizer)
    entry = report.model_entry("pretraining", "scratch-transformer", "finetune.models.scratch", ".", trained)
    entry["history"].insert(0, {"step": 0, "epoch": 0.0, "samples": 0, "eval": before})
    results = {
        "task": TASK,
        "objective": config.objective,
        "pipeline_tag": PIPELINE_TAG[config.objective],
        "dataset": config.corpus,
        "dataset_source": "; ".join(corpus.notes),
        "dataset_kind": "packaged" if all(p["kind"] == "packaged" for p in corpus.parts) else "local",
        "dataset_is_hub": any(p["kind"] == "hub" for p in corpus.parts),
        "base_model": None,
        "base_model_origin": "random initialisation (finetune.models.scratch), pretrained by this run",
        "metric_for_best": METRIC_FOR_BEST,
        "greater_is_better": False,
        "corpus": config.corpus,
        "corpus_parts": corpus.parts,
        "texts": {"train": len(splits["train"]), "held_out": len(splits["validation"])},
        "tokenizer": source.label,
        "tokenizer_origin": source.origin,
        "sentiment_split_seeds": list(config.sentiment_split_seeds) if "tweets" in config.corpus.split(",") else [],
        "steps": trained.steps,
        "wall_seconds": None,  # filled in below, once everything else is done
        "held_out": {"before": round_all(before), "after": round_all(trained.test_metrics)},
        "examples": {"before": before_examples, "after": after_examples},
        "models": [entry],
    }
    if config.objective == "mlm":
        results["masking"] = {
            "mlm_probability": config.mlm_probability,
            "mask_replace_prob": 1.0 if config.whole_word_mask else config.mask_replace_prob,
            "random_replace_prob": 0.0 if config.whole_word_mask else config.random_replace_prob,
            "whole_word_mask": config.whole_word_mask,
            "held_out_seed": config.seed,
        }
    if state.is_main_process:
        plot_pretraining_curves(run_dir, entry["history"], config.objective)
    results["wall_seconds"] = round(time.perf_counter() - started, 1)
    kit.finish_run(
        run_dir,
        config,
        results,
        where=f"(results.json, pretraining_curves.png; fine-tune from it: {FINE_TUNE[config.objective]} --scratch_init "
        f"{run_dir})",
        table=format_report(results),
    )
    return results


def held_out_metrics(model, loader, evaluator, config, run_dir: Path) -> dict:
    """The model's held-out numbers before any training (the engine evaluates during and after training)."""
    accelerator = engine.make_accelerator(config, run_dir / "logs")
    prepared = accelerator.prepare(model)
    return engine.evaluate(prepared, accelerator.prepare(loader), evaluator, accelerator, desc="before training")


def round_all(metrics: dict) -> dict:
    return {k: round(v, 5) for k, v in metrics.items()}


def plot_pretraining_curves(run_dir: Path, history: list, objective: str) -> Path:
    """pretraining_curves.png beside pretraining_curves.json: held-out loss and masked-token accuracy (mlm) or
    perplexity (clm) against optimizer steps, from step 0 (the untrained model)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    second = "accuracy" if objective == "mlm" else "perplexity"
    points = [(h["step"], h["eval"]["loss"], h["eval"][second]) for h in history if "eval" in h]
    steps, losses, seconds = (list(x) for x in zip(*points))
    atomic_write_json(
        Path(run_dir) / "pretraining_curves.json",
        {"objective": objective, "step": steps, "held_out_loss": losses, f"held_out_{second}": seconds},
    )
    what = "masked-token" if objective == "mlm" else "next-token"
    fig, (ax_loss, ax_second) = plt.subplots(1, 2, figsize=(11, 4))
    ax_loss.plot(steps, losses, marker="o")
    ax_loss.set(title=f"held-out {what} loss", xlabel="optimizer step", ylabel="cross-entropy (nats)")
    ax_second.plot(steps, seconds, marker="o", color="tab:green")
    ax_second.set(title=f"held-out {what} {second}", xlabel="optimizer step", ylabel=second)
    if second == "perplexity":
        ax_second.set_yscale("log")
    for ax in (ax_loss, ax_second):
        ax.grid(alpha=0.3)
    fig.suptitle(f"pretraining the scratch transformer ({objective})")
    fig.tight_layout()
    return report.save_figure(fig, Path(run_dir) / "pretraining_curves.png")


def format_report(results: dict) -> str:
    before, after = results["held_out"]["before"], results["held_out"]["after"]
    second = "accuracy" if results["objective"] == "mlm" else "perplexity"
    lines = [
        f"held-out {'masked-token' if results['objective'] == 'mlm' else 'next-token'} loss {before['loss']:.3f} -> "
        f"{after['loss']:.3f}, {second} {before[second]:.4g} -> {after[second]:.4g} "
        f"({results['steps']} steps, {results['wall_seconds']:.0f} s)"
    ]
    for when in ("before", "after"):
        lines.append(f"{'fill-mask' if results['objective'] == 'mlm' else 'greedy'} examples {when} pretraining:")
        lines += describe_examples(results["examples"][when], results["objective"])
    return "\n".join(lines)


def main(argv=None) -> int:
    return kit.main(PretrainConfig, run, argv)


if __name__ == "__main__":
    sys.exit(main())
