"""Configuration: typed dataclasses, filled from a YAML file, then from command-line overrides.

Precedence, lowest first: the dataclass defaults, the recipe's own YAML (`recipes/configs/<task>.yaml`), the
user's `--config FILE`, then `--field value` flags. Parsing is `transformers.HfArgumentParser`; the only thing
added here is that every mistake (unknown key, bad value) becomes a one-line `UserError` instead of argparse's
usage dump.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, TypeVar

import yaml

from finetune.errors import UserError

C = TypeVar("C")


@dataclass
class TrainingConfig:
    """What every recipe shares: where outputs go, how long and how to train, checkpoints, comparison."""

    output_dir: str = field(default="runs/run", metadata={"help": "Run directory: final model, results.json, plots, checkpoints."})
    overwrite: bool = field(default=False, metadata={"help": "Replace an earlier run in output_dir."})
    resume: bool = field(default=False, metadata={"help": "Continue the run in output_dir from its last checkpoint."})
    seed: int = field(default=42, metadata={"help": "Seeds the split, the model initialisation and the batch order."})

    num_epochs: float = field(default=1.0, metadata={"help": "Passes over the training data (fractions allowed)."})
    max_steps: Optional[int] = field(default=None, metadata={"help": "Optimizer steps in all; overrides num_epochs."})
    batch_size: int = field(default=32, metadata={"help": "Examples per device per micro-batch."})
    eval_batch_size: int = field(default=64, metadata={"help": "Examples per device per evaluation batch."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-batches per optimizer step."})
    learning_rate: float = field(default=5e-5, metadata={"help": "Peak learning rate of AdamW."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (not applied to biases and norms)."})
    warmup_ratio: float = field(default=0.06, metadata={"help": "Fraction of steps with linear warmup, then linear decay."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm (0 turns clipping off)."})
    mixed_precision: str = field(default="auto", metadata={"help": "auto (bf16 on a GPU that has it, else fp32) | no | bf16 | fp16."})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Trade compute for memory, where the model supports it."})

    eval_steps: Optional[int] = field(default=None, metadata={"help": "Also evaluate every N optimizer steps (always at each epoch end)."})
    early_stopping_patience: Optional[int] = field(default=None, metadata={"help": "Stop after N evaluations without improvement."})
    checkpoint_steps: Optional[int] = field(default=None, metadata={"help": "Save a resumable checkpoint every N steps (always at each epoch end)."})
    keep_checkpoints: int = field(default=2, metadata={"help": "How many recent checkpoints to keep."})
    stop_after_steps: Optional[int] = field(default=None, metadata={"help": "Checkpoint and stop after N steps, as if interrupted; --resume continues."})
    log_steps: int = field(default=10, metadata={"help": "Record the training loss every N steps."})
    log_with: Optional[str] = field(default=None, metadata={"help": "Trackers, comma-separated: tensorboard, mlflow, trackio, wandb (finetune/trackers.py)."})

    compare: bool = field(default=True, metadata={"help": "Also train the from-scratch transformer and compare."})

    lora: bool = field(default=False, metadata={"help": "Train LoRA adapters (PEFT) instead of every weight; heads stay trainable."})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: float = field(default=16.0, metadata={"help": "LoRA scaling numerator (the update is scaled by alpha / r)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA branch's input."})
    lora_target_modules: Optional[list[str]] = field(default=None, metadata={"help": "Module names to adapt (default: per architecture, see finetune/lora.py)."})

    def __post_init__(self):
        positive = ["batch_size", "eval_batch_size", "gradient_accumulation_steps", "log_steps", "keep_checkpoints"]
        for name in positive:
            if getattr(self, name) < 1:
                raise UserError(f"--{name} must be at least 1, got {getattr(self, name)}")
        for name in ["max_steps", "eval_steps", "checkpoint_steps", "stop_after_steps", "early_stopping_patience"]:
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UserError(f"--{name} must be at least 1 (or left unset), got {value}")
        if self.num_epochs <= 0:
            raise UserError(f"--num_epochs must be positive, got {self.num_epochs}")
        if self.learning_rate <= 0:
            raise UserError(f"--learning_rate must be positive, got {self.learning_rate}")
        if not 0 <= self.warmup_ratio < 1:
            raise UserError(f"--warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.mixed_precision not in ("auto", "no", "bf16", "fp16"):
            raise UserError(f"--mixed_precision must be one of auto, no, bf16, fp16; got {self.mixed_precision!r}")
        from finetune.trackers import names as tracker_names

        tracker_names(self.log_with)  # an unknown tracker or a missing package: one line now, before anything loads
        if self.resume and self.overwrite:
            raise UserError("--resume and --overwrite contradict each other: pick one")
        if self.lora_r < 1:
            raise UserError(f"--lora_r must be at least 1, got {self.lora_r}")
        if self.lora_alpha <= 0:
            raise UserError(f"--lora_alpha must be positive, got {self.lora_alpha}")
        if not 0 <= self.lora_dropout < 1:
            raise UserError(f"--lora_dropout must be in [0, 1), got {self.lora_dropout}")


def _parser(config_cls):
    from transformers import HfArgumentParser

    class Parser(HfArgumentParser):
        def error(self, message):  # argparse would print usage and exit; we want one line and exit 2
            raise UserError(f"{message} (see --help for the fields)")

    return Parser(config_cls, allow_abbrev=False)


def load_yaml(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {path} does not exist: check the path given to --config")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise UserError(f"config file {path} is not valid YAML ({str(err).splitlines()[0]}): fix the file") from None
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a mapping of field: value, not {type(data).__name__}")
    return data


def parse_config(config_cls: type[C], argv: list[str], default_yaml: Optional[Path] = None) -> C:
    """Build a `config_cls` from defaults < default_yaml < --config FILE < --field value flags."""
    argv = list(argv)
    values: dict = {}
    if default_yaml is not None:
        values.update(load_yaml(default_yaml))
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            raise UserError("--config needs a file path: --config my.yaml")
        values.update(load_yaml(argv[i + 1]))
        del argv[i : i + 2]

    known = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UserError(f"unknown config key(s) {', '.join(unknown)}: remove them or use one of {', '.join(sorted(known))}")

    # YAML values go through the same argparse typing as flags (YAML reads 3e-5 as a string, for one);
    # they come first, so a flag given later wins.
    parser = _parser(config_cls)
    if "-h" in argv or "--help" in argv:
        parser.print_help()
        raise SystemExit(0)
    tokens = []
    for key, value in values.items():
        if value is None:
            continue
        tokens.append(f"--{key}")
        tokens.extend(str(v) for v in value) if isinstance(value, list) else tokens.append(str(value))
    try:
        (config,) = parser.parse_args_into_dataclasses(args=tokens + argv)
    except ValueError as err:  # HfArgumentParser: "Some specified arguments are not used..."
        raise UserError(f"{err}: check the flag names (see --help)") from None
    return config


def save_config(config, path: Path) -> None:
    from finetune.io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(dataclasses.asdict(config), sort_keys=False))
