"""Models: a Hub name, a local folder or an offline alias -> an Auto* model with its tokenizer or processor."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from finetune.core.atomic_io import disk_errors, publish_files
from finetune.core.environment import is_offline
from finetune.core.errors import UserError
from finetune.models import assets


@dataclass
class ModelSource:
    name: str  # what the user asked for
    path: str  # what from_pretrained receives: a local folder or a Hub name
    note: str  # where it came from, said in the run's output (may hold a local path: never published)
    is_hub: bool
    origin: str = ""  # where it came from without any local path: results.json and the model card say this

    @property
    def hub_id(self) -> Optional[str]:
        """The Hub id the weights came from, or None (an offline alias or a local folder)."""
        return self.name if self.is_hub else None

    @property
    def label(self) -> str:
        """A short name without the filesystem: the alias or Hub id as given, or a local folder's own name."""
        return self.name if self.is_hub or self.name in assets.MODELS else Path(self.path).resolve().name


def resolve(name: str) -> ModelSource:
    if name in assets.MODELS:
        path = assets.resolve_model(name)
        asset = assets.MODELS[name]
        return ModelSource(
            name,
            str(path),
            f"offline default {name!r}: {asset.description}",
            is_hub=False,
            origin=f"{asset.description}, offline default",
        )
    local = Path(os.path.expanduser(name))
    if local.is_dir():
        return ModelSource(
            name,
            str(local),
            f"local folder {local}",
            is_hub=False,
            origin=f"a local folder named {local.resolve().name}",
        )
    if name.startswith((".", "/", "~")):
        raise UserError(f"model folder {name} does not exist: check the path")
    return ModelSource(
        name, name, f"Hugging Face Hub model {name}", is_hub=True, origin=f"Hugging Face Hub model {name}"
    )


def load_pretrained(loader, source: ModelSource, what: str, **kwargs):
    """`loader(source.path, **kwargs)` (any from_pretrained), with 'not found' / 'offline' failures as one-line
    UserErrors. `what` names the thing in the message ("config", "causal LM", "image processor")."""
    try:
        return loader(source.path, **kwargs)
    except (OSError, ValueError) as err:
        if source.is_hub and is_offline():
            raise UserError(
                f"model {source.name!r} is not a local folder and is not in the local Hugging Face cache, and "
                f"HF_HUB_OFFLINE=1 forbids downloading it: use a local folder or an offline alias "
                f"({', '.join(assets.MODELS)}), or unset HF_HUB_OFFLINE"
            ) from None
        raise UserError(f"could not load the {what} of {source.name!r}: {str(err).splitlines()[0]}") from None


_load = load_pretrained  # the earlier private name (finetune.models.lora uses it)


def head_labels(label_names: list[str]) -> dict:
    """num_labels / id2label / label2id for a classification head over `label_names`, in that order."""
    return dict(
        num_labels=len(label_names),
        id2label=dict(enumerate(label_names)),
        label2id={name: i for i, name in enumerate(label_names)},
    )


def load_tokenizer(source: ModelSource):
    from transformers import AutoTokenizer

    tokenizer = load_pretrained(AutoTokenizer.from_pretrained, source, "tokenizer")
    if tokenizer.pad_token is None:
        # GPT-2 style tokenizers have no pad token. Padding with EOS is safe because the attention mask hides
        # the padding and the labels ignore it; the model's config must learn the same id (see below).
        if tokenizer.eos_token is None:
            raise UserError(
                f"the tokenizer of {source.name!r} has neither a pad nor an eos token: add a pad token to it"
            )
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_sequence_classifier(
    source: ModelSource, tokenizer, label_names: list[str], problem_type: Optional[str] = None
):
    """AutoModelForSequenceClassification with a fresh head for `label_names`.

    problem_type (config.problem_type, which picks the model's loss): "single_label_classification" (the default),
    "multi_label_classification" (one sigmoid per label), or "regression" (label_names is then one name, the score).
    """
    extra = {"problem_type": problem_type} if problem_type else {}
    from transformers import AutoModelForSequenceClassification

    model = load_pretrained(
        AutoModelForSequenceClassification.from_pretrained,
        source,
        "model",
        **head_labels(label_names),
        # A checkpoint that already has a head for another label count (an SST-2 model fine-tuned on three
        # classes) gets a new head: the mismatch is the point, not an error.
        ignore_mismatched_sizes=True,
        **extra,
    )
    # Models that pool the last non-padding token (GPT-2, Llama) find it through config.pad_token_id.
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model


def count_parameters(model, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def non_embedding_parameters(model) -> int:
    """Parameters outside the token/position embeddings: the ones each token's forward pass multiplies by."""
    embedding_params = sum(m.weight.numel() for m in model.modules() if type(m).__name__ == "Embedding")
    return count_parameters(model) - embedding_params


def save_model(result, tokenizer_or_processor, target: Path) -> None:
    """Save a trained model (+ tokenizer) so that from_pretrained(target) / pipeline(model=target) load it.

    Written into a temporary folder first, then each file is renamed into `target`: every file is either the
    old complete one or the new complete one, whatever happens mid-save.
    """
    import shutil
    import tempfile

    accelerator = result.accelerator
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        target = Path(target)
        for stale in target.glob(".save.*"):  # left by a process killed mid-save
            shutil.rmtree(stale, ignore_errors=True)
        with disk_errors("the trained model", target):
            target.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(prefix=".save.", dir=target) as tmp:
                result.model.save_pretrained(tmp, safe_serialization=True)
                if tokenizer_or_processor is not None:
                    tokenizer_or_processor.save_pretrained(tmp)
                publish_files(Path(tmp), target)
    accelerator.wait_for_everyone()


def max_positions(model) -> Optional[int]:
    """How many token positions the model has (BERT's max_position_embeddings, GPT-2's n_positions), if it says."""
    config = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_fits(model, length: int, flag: str) -> None:
    """Refuse a sequence length the model has no positions for (it would fail mid-training with an index error)."""
    limit = max_positions(model)
    if limit is not None and length > limit:
        raise UserError(
            f"{flag} {length} is more than the {limit} positions the model has: pass {flag} {limit} or less"
        )


def freeze_base(model) -> None:
    """A linear probe (--freeze_base): every weight of the pretrained body (`model.base_model`) frozen, so only the
    new head trains: what the pretrained features alone are worth."""
    for param in model.base_model.parameters():
        param.requires_grad_(False)
    if count_parameters(model, trainable_only=True) == 0:  # a causal LM's head is its tied input embedding
        raise UserError(
            f"--freeze_base leaves nothing to train in {type(model).__name__} (its head is part of the body): "
            "drop --freeze_base, or use --lora"
        )


def probe_note(model) -> str:
    trainable, total = count_parameters(model, trainable_only=True), count_parameters(model)
    return f"linear probe (--freeze_base): the pretrained body is frozen; {trainable:,} of {total:,} weights train"
