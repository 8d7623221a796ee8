"""LoRA (PEFT) for every recipe: which modules to adapt, wrapping a model, saving, reloading, and merging.

    finetune train sentiment --lora                      # adapters on BERT's query/value, head fully trained
    finetune train text_generation --lora --lora_r 16
    finetune merge RUN_DIR [--output DIR]                # base + adapter -> one plain model in RUN_DIR/merged

LoRA freezes the pretrained weights W and learns a low-rank update: W x + (alpha / r) * B A x, with A (r x in)
and B (out x r, zero at the start, so training starts from the pretrained model exactly). Only A and B train,
plus the task head, which is new and must learn from nothing (PEFT's `modules_to_save`: a full trainable copy
that is saved with the adapter).

What a LoRA run directory holds (see docs/text_generation.md):
    adapter_config.json          PEFT's config; base_model_name_or_path is the base model's LOCAL folder (an
                                 offline alias's cache folder, or the user's folder), so reloading never
                                 goes to the Hub; a Hub name stays a Hub name (with HF_HUB_OFFLINE=1 it is read
                                 from the local cache)
    adapter_model.safetensors    the LoRA matrices and the head
    tokenizer files              the tokenizer (pad token included)
    results.json                 for classifiers, the label names the base needs to be rebuilt with
There is deliberately no config.json beside the adapter: transformers would then take the folder for a full
model. `finetune merge` writes one (a full model) into RUN_DIR/merged.
"""

from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

from finetune.core.errors import UserError
from finetune.models.loading import ModelSource, _load, save_model

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
FULL_MODEL_FILES = ("config.json", "model.safetensors", "generation_config.json")
# Attention projections to adapt, by how architectures name them; the first set fully present wins.
# (The original LoRA paper adapts the query and value projections; GPT-2 fuses q, k, v into one c_attn.)
TARGET_CANDIDATES = (
    ("c_attn",),  # GPT-2 (a fused q/k/v Conv1D)
    ("query", "value"),  # BERT, RoBERTa, ELECTRA
    ("q_proj", "v_proj"),  # Llama, SmolLM2, Mistral, Qwen, ViT/DINOv2 (transformers 5), the scratch transformer
    ("q_lin", "v_lin"),  # DistilBERT
)
HEAD_NAMES = (
    "classifier",
    "score",
    "pre_classifier",
    "qa_outputs",
)  # newly initialised task heads: trained fully, saved
TASK_TYPES = {
    "SEQ_CLS": "AutoModelForSequenceClassification",
    "TOKEN_CLS": "AutoModelForTokenClassification",
    "CAUSAL_LM": "AutoModelForCausalLM",
    "QUESTION_ANS": "AutoModelForQuestionAnswering",
    "SEQ_2_SEQ_LM": "AutoModelForSeq2SeqLM",
}


def _linear_like(module) -> bool:
    import torch

    return isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D"


def lora_target_modules(model) -> list[str]:
    """The module names LoRA should adapt in `model`: its attention's query/value projections.

    GPT-2 -> ["c_attn"]; BERT -> ["query", "value"]; Llama-style -> ["q_proj", "v_proj"]; DistilBERT ->
    ["q_lin", "v_lin"]. Raises UserError for an architecture that names them otherwise.
    """
    present = {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if _linear_like(module)}
    for candidate in TARGET_CANDIDATES:
        if all(name in present for name in candidate):
            return list(candidate)
    kind = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
    raise UserError(
        f"no known attention projections to adapt in {kind} (linear layers: {', '.join(sorted(present)) or 'none'}): "
        f"pass --lora_target_modules NAME [NAME ...]"
    )


def head_modules(model) -> list[str]:
    """Top-level task heads of `model` (newly initialised, so trained in full and saved with the adapter)."""
    return [name for name, _ in model.named_children() if name in HEAD_NAMES]


def apply_lora(model, config, task_type: Optional[str], base_path: Optional[str] = None):
    """Wrap `model` in a PEFT LoRA model per config.lora_r / lora_alpha / lora_dropout / lora_target_modules.

    task_type: "SEQ_CLS", "CAUSAL_LM", or None (e.g. image classification: the base class is then recorded
    in adapter_config.json's auto_mapping). The classification head, if any, stays fully trainable and is
    saved with the adapter. base_path: where the base model loads from (a local folder, or a Hub name); it is
    written to adapter_config.json as base_model_name_or_path so that reloading needs no Hub.
    """
    from peft import LoraConfig, get_peft_model

    targets = list(config.lora_target_modules or lora_target_modules(model))
    leaves = {name.rsplit(".", 1)[-1]: module for name, module in model.named_modules()}
    missing = [t for t in targets if t not in leaves]
    if missing:
        raise UserError(
            f"--lora_target_modules {' '.join(missing)}: no such module in {type(model).__name__}; "
            f"use names such as {', '.join(lora_target_modules_hint(model))}"
        )
    fan_in_fan_out = any(type(leaves[t]).__name__ == "Conv1D" for t in targets)  # GPT-2 stores W transposed
    heads = head_modules(model)
    lora_config = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=targets,
        modules_to_save=heads or None,
        fan_in_fan_out=fan_in_fan_out,
        task_type=task_type,
        bias="none",
    )
    with _quiet_peft():
        peft_model = get_peft_model(model, lora_config)
    if base_path is not None:
        local = Path(os.path.expanduser(str(base_path)))
        peft_model.peft_config["default"].base_model_name_or_path = (
            str(local.resolve()) if local.is_dir() else str(base_path)
        )
    return peft_model


@contextmanager
def _quiet_peft():
    """peft 0.21 calls a transformers method deprecated in 5.x: a FutureWarning users can do nothing about."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def lora_target_modules_hint(model) -> list[str]:
    try:
        return lora_target_modules(model)
    except UserError:
        return sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if _linear_like(m)})[:6]


def describe(model) -> str:
    """'LoRA r=8 on c_attn: 147,456 of 124,587,264 parameters trainable (0.12%)'."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    cfg = model.peft_config["default"]
    heads = f" + heads {', '.join(sorted(cfg.modules_to_save))}" if cfg.modules_to_save else ""
    return (
        f"LoRA r={cfg.r} alpha={cfg.lora_alpha:g} on {', '.join(sorted(cfg.target_modules))}{heads}: "
        f"{trainable:,} of {total:,} parameters trainable ({100 * trainable / total:.2f}%)"
    )


def is_peft_model(model) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "merge_and_unload")


# ---- saving -------------------------------------------------------------------------------------------------


def save_run_model(result, tokenizer_or_processor, run_dir: Path) -> None:
    """Save a trained model into run_dir: the adapter (LoRA) or the full model, then remove the other kind's
    files an earlier run (--overwrite) may have left, so the folder never holds both."""

    save_model(result, tokenizer_or_processor, run_dir)
    if not result.accelerator.is_main_process:
        return
    run_dir = Path(run_dir)
    stale = FULL_MODEL_FILES if is_peft_model(result.model) else ADAPTER_FILES
    for name in stale:
        (run_dir / name).unlink(missing_ok=True)
    shutil.rmtree(run_dir / "merged", ignore_errors=True)  # merged from an earlier adapter: out of date


# ---- reloading ----------------------------------------------------------------------------------------------


def is_adapter_dir(path) -> bool:
    return (Path(path) / "adapter_config.json").is_file()


def read_adapter_config(run_dir: Path) -> dict:
    path = Path(run_dir) / "adapter_config.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"{path} is unreadable ({err}): re-run training with --lora to rewrite it") from None


def base_kwargs_from_run(run_dir: Path) -> dict:
    """What the base model must be rebuilt with to take the adapter: label names (from results.json) and the
    padding id (from the saved tokenizer), for classifiers; nothing for causal LMs."""
    run_dir = Path(run_dir)
    kwargs = {}
    results_path = run_dir / "results.json"
    if results_path.is_file():
        try:
            labels = json.loads(results_path.read_text()).get("labels")
        except ValueError:
            labels = None
        if labels:
            # The base's own head (e.g. 1,000 ImageNet classes) may differ in size: it is replaced by the
            # adapter's saved head (modules_to_save), so a mismatch there is expected, not an error.
            kwargs.update(
                num_labels=len(labels),
                id2label=dict(enumerate(labels)),
                label2id={name: i for i, name in enumerate(labels)},
                ignore_mismatched_sizes=True,
            )
    tokenizer_config = run_dir / "tokenizer_config.json"
    if tokenizer_config.is_file():
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(run_dir)
        if tokenizer.pad_token_id is not None:
            kwargs["pad_token_id"] = tokenizer.pad_token_id
    return kwargs


def _base_class(adapter_config: dict):
    import importlib

    import transformers

    task_type = adapter_config.get("task_type")
    if task_type in TASK_TYPES:
        return getattr(transformers, TASK_TYPES[task_type])
    mapping = adapter_config.get("auto_mapping") or {}
    library, name = mapping.get("parent_library", ""), mapping.get("base_model_class")
    if name and (library == "transformers" or library.startswith(("transformers.", "finetune."))):
        # here, not at the top: transformers' modelling code (~2 s), only once a model is opened
        import finetune.models.scratch  # noqa: F401  registers the from-scratch models

        return getattr(importlib.import_module(library), name)
    raise UserError(
        f"adapter task type {task_type!r} is not one finetune can rebuild (expected one of "
        f"{', '.join(TASK_TYPES)}, or an auto_mapping to a transformers class): load it with peft yourself"
    )


def load_adapter_run(run_dir, **base_kwargs):
    """(PeftModel in eval mode, base path) for a LoRA run directory; the base loads from its local folder.

    base_kwargs go to the base's from_pretrained (default: base_kwargs_from_run(run_dir)).
    """
    from peft import PeftModel

    run_dir = Path(run_dir)
    adapter_config = read_adapter_config(run_dir)
    base_path = adapter_config.get("base_model_name_or_path")
    if not base_path:
        raise UserError(
            f"{run_dir / 'adapter_config.json'} names no base model (base_model_name_or_path): "
            "set it to the base model's folder"
        )
    if base_path.startswith(("/", ".", "~")) and not Path(os.path.expanduser(base_path)).is_dir():
        raise UserError(
            f"the adapter's base model folder {base_path} does not exist (moved or cache cleared?): "
            f"restore it, or edit base_model_name_or_path in {run_dir / 'adapter_config.json'}"
        )
    cls = _base_class(adapter_config)
    kwargs = base_kwargs_from_run(run_dir) if not base_kwargs else base_kwargs

    source = ModelSource(base_path, base_path, "adapter base", is_hub=not Path(os.path.expanduser(base_path)).is_dir())
    base = _load(cls.from_pretrained, source, "base model", **kwargs)
    try:
        with _quiet_peft():
            model = PeftModel.from_pretrained(base, str(run_dir))
    except (OSError, ValueError, RuntimeError) as err:
        raise UserError(f"could not load the adapter in {run_dir}: {str(err).splitlines()[0]}") from None
    model.eval()
    return model, base_path
