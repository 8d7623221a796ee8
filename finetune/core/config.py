"""Configuration: typed dataclasses, filled from a YAML file, then from command-line overrides.

Precedence, lowest first: the dataclass defaults, which for a task's config class include its own YAML
(`recipes/configs/<task>.yaml`, applied by `defaults_from`, so `SentimentConfig(output_dir=...)` in Python and
`finetune train sentiment` start from the same values), the user's `--config FILE`, then `--field value` flags. Parsing
is `transformers.HfArgumentParser`; the only thing
added here is that every mistake (unknown key, bad value) becomes a one-line `UserError` instead of argparse's
usage dump.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Optional, TypeVar

import yaml

from finetune.core.atomic_io import atomic_write_text
from finetune.core.errors import UserError
from finetune.core.precision import check_requested as check_precision
from finetune.core.secrets import is_secret_name
from finetune.core.trackers import names as tracker_names

C = TypeVar("C")


@dataclass
class TrainingConfig:
    """What every recipe shares: where outputs go, how long and how to train, checkpoints, comparison."""

    # What --scratch_init can start in this recipe: "encoder" (a `finetune pretrain mlm` run) or "decoder" (a clm
    # run), set by a recipe's config class that calls finetune/models/scratch_init.py; None refuses the flag in one
    # line, so a recipe that does not load the weights never ignores it silently.
    scratch_init_kind: ClassVar[Optional[str]] = None
    # The study's arms a recipe's run() honours (finetune study: --skip_pretrained for the scratch arms, --freeze_base
    # for the linear probe); a recipe that does not set these refuses the flags in one line, never ignores them.
    supports_skip_pretrained: ClassVar[bool] = False
    supports_freeze_base: ClassVar[bool] = False

    output_dir: str = field(
        default="runs/run",
        metadata={
            "resume": "may_change",
            "bookkeeping": True,
            "help": "Run directory: final model, results.json, plots, checkpoints.",
        },
    )
    overwrite: bool = field(
        default=False,
        metadata={"resume": "may_change", "bookkeeping": True, "help": "Replace an earlier run in output_dir."},
    )
    resume: bool = field(
        default=False,
        metadata={
            "resume": "may_change",
            "bookkeeping": True,
            "help": "Continue the run in output_dir from its last checkpoint.",
        },
    )
    seed: int = field(default=42, metadata={"help": "Seeds the split, the model initialisation and the batch order."})

    num_epochs: float = field(
        default=1.0, metadata={"resume": "may_grow", "help": "Passes over the training data (fractions allowed)."}
    )
    max_steps: Optional[int] = field(
        default=None, metadata={"resume": "may_grow", "help": "Optimizer steps in all; overrides num_epochs."}
    )
    batch_size: int = field(default=32, metadata={"help": "Examples per device per micro-batch."})
    eval_batch_size: int = field(
        default=64,
        metadata={"resume": "may_change", "bookkeeping": True, "help": "Examples per device per evaluation batch."},
    )
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-batches per optimizer step."})
    learning_rate: float = field(default=5e-5, metadata={"help": "Peak learning rate of AdamW."})
    weight_decay: float = field(
        default=0.01, metadata={"help": "AdamW weight decay (not applied to biases and norms)."}
    )
    warmup_ratio: float = field(
        default=0.06, metadata={"help": "Fraction of steps with linear warmup, then linear decay."}
    )
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm (0 turns clipping off)."})
    mixed_precision: str = field(
        default="auto",
        metadata={
            "help": "auto (bf16 where the GPU or CPU does bf16 natively, else fp32; "
            "see finetune/core/precision.py) | no (fp32) | bf16 | fp16."
        },
    )
    gradient_checkpointing: bool = field(
        default=False,
        metadata={"resume": "may_change", "help": "Trade compute for memory, where the model supports it."},
    )
    torch_compile: bool = field(
        default=False,
        metadata={"help": "Compile the model with torch.compile (inductor); pays off on GPUs, rarely on CPUs."},
    )
    num_workers: Optional[int] = field(
        default=None,
        metadata={
            "help": "DataLoader worker processes for per-epoch input work "
            "(default: 0 on 1-2 cores, else cores - 1, at most 8)."
        },
    )

    eval_steps: Optional[int] = field(
        default=None,
        metadata={"resume": "may_change", "help": "Also evaluate every N optimizer steps (always at each epoch end)."},
    )
    early_stopping_patience: Optional[int] = field(
        default=None, metadata={"resume": "may_change", "help": "Stop after N evaluations without improvement."}
    )
    checkpoint_steps: Optional[int] = field(
        default=None,
        metadata={
            "resume": "may_change",
            "bookkeeping": True,
            "help": "Save a resumable checkpoint every N steps (always at each epoch end).",
        },
    )
    keep_checkpoints: str = field(
        default=2,
        metadata={
            "resume": "may_change",
            "bookkeeping": True,
            "help": "Resumable checkpoints to keep: N (the newest N), last (= 1), all, or "
            "none (the newest while training, deleted once the run has finished).",
        },
    )
    save_only_model: bool = field(
        default=False,
        metadata={
            "resume": "may_change",
            "bookkeeping": True,
            "help": "Checkpoints written during training hold the weights only, no "
            "optimizer/scheduler/RNG state (about a third of the size); "
            "the last one (end of training, Ctrl-C) is still full, but a "
            "run that crashed cannot be resumed from a weights-only one.",
        },
    )
    stop_after_steps: Optional[int] = field(
        default=None,
        metadata={
            "resume": "may_change",
            "bookkeeping": True,
            "help": "Checkpoint and stop after N steps, as if interrupted; --resume continues.",
        },
    )
    log_steps: int = field(
        default=10,
        metadata={"resume": "may_change", "bookkeeping": True, "help": "Record the training loss every N steps."},
    )
    log_with: Optional[str] = field(
        default=None,
        metadata={
            "resume": "may_change",
            "bookkeeping": True,
            "help": "Trackers, comma-separated: tensorboard, mlflow, trackio, wandb (finetune/core/trackers.py).",
        },
    )

    compare: bool = field(
        default=True, metadata={"resume": "may_change", "help": "Also train the from-scratch transformer and compare."}
    )
    scratch_init: Optional[str] = field(
        default=None,
        metadata={
            "help": "A `finetune pretrain` run folder: the from-scratch model starts from its weights (embeddings "
            "and blocks; the task head new). See finetune/models/scratch_init.py."
        },
    )
    # The arms of `finetune study` (finetune/commands/study.py), each a plain run of the recipe:
    skip_pretrained: bool = field(
        default=False,
        metadata={
            "help": "Train only the from-scratch transformer (with --compare); the pretrained checkpoint still "
            "gives the tokenizer."
        },
    )
    freeze_base: bool = field(
        default=False,
        metadata={"help": "A linear probe: train only the new head on the frozen pretrained model."},
    )

    lora: bool = field(
        default=False, metadata={"help": "Train LoRA adapters (PEFT) instead of every weight; heads stay trainable."}
    )
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: float = field(
        default=16.0, metadata={"help": "LoRA scaling numerator (the update is scaled by alpha / r)."}
    )
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA branch's input."})
    lora_target_modules: Optional[list[str]] = field(
        default=None,
        metadata={"help": "Module names to adapt (default: per architecture, see finetune/models/lora.py)."},
    )

    def __post_init__(self):
        self.keep_checkpoints = keep_checkpoints_value(self.keep_checkpoints)
        positive = ["batch_size", "eval_batch_size", "gradient_accumulation_steps", "log_steps"]
        for name in positive:
            if getattr(self, name) < 1:
                raise UserError(f"--{name} must be at least 1, got {getattr(self, name)}")
        for name in ["max_steps", "eval_steps", "checkpoint_steps", "stop_after_steps", "early_stopping_patience"]:
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UserError(f"--{name} must be at least 1 (or left unset), got {value}")
        for name in [f.name for f in dataclasses.fields(self) if isinstance(getattr(self, f.name), float)]:
            if not math.isfinite(getattr(self, name)):  # argparse's float() takes "nan" and "inf"
                raise UserError(f"--{name} must be a finite number, got {getattr(self, name)}")
        for f in dataclasses.fields(self):  # --dataset "" would otherwise reach a library as a path
            value = getattr(self, f.name)
            if isinstance(value, str) and not value.strip() and f.default not in ("", None) and f.name != "output_dir":
                raise UserError(f"--{f.name} is empty: give a value (default: {f.default})")
        if self.num_epochs <= 0:
            raise UserError(f"--num_epochs must be positive, got {self.num_epochs}")
        if self.learning_rate <= 0:
            raise UserError(f"--learning_rate must be positive, got {self.learning_rate}")
        if not 0 <= self.seed < 2**32:  # numpy's limit, and set_seed seeds numpy
            raise UserError(f"--seed must be in [0, 2**32), got {self.seed}")
        for name in ("weight_decay", "max_grad_norm"):
            if getattr(self, name) < 0:
                raise UserError(f"--{name} must be at least 0, got {getattr(self, name)}")
        if "\x00" in self.output_dir:
            raise UserError("--output_dir holds a NUL character: choose a plain folder name")
        if not 0 <= self.warmup_ratio < 1:
            raise UserError(f"--warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.num_workers is not None and self.num_workers < 0:
            raise UserError(f"--num_workers must be 0 or more (or left unset), got {self.num_workers}")
        check_precision(self.mixed_precision)  # now, in one line, before anything loads (choose() applies it later)

        tracker_names(self.log_with)  # an unknown tracker or a missing package: one line now, before anything loads
        if self.scratch_init is not None and not self.scratch_init.strip():
            raise UserError("--scratch_init is empty: give a `finetune pretrain` run folder, or leave it out")
        if self.scratch_init and self.scratch_init_kind is None:
            raise UserError(
                f"--scratch_init: {type(self).__name__}'s scratch model cannot start from a pretraining run "
                f"(finetune pretrain makes text encoders and decoder-only LMs): drop --scratch_init"
            )
        if self.scratch_init and not self.compare:
            raise UserError("--scratch_init starts the from-scratch model, which --compare false skips: drop one")
        if self.resume and self.overwrite:
            raise UserError("--resume and --overwrite contradict each other: pick one")
        if self.lora_r < 1:
            raise UserError(f"--lora_r must be at least 1, got {self.lora_r}")
        if self.lora_alpha <= 0:
            raise UserError(f"--lora_alpha must be positive, got {self.lora_alpha}")
        if not 0 <= self.lora_dropout < 1:
            raise UserError(f"--lora_dropout must be in [0, 1), got {self.lora_dropout}")
        for flag, supported in (
            ("skip_pretrained", self.supports_skip_pretrained),
            ("freeze_base", self.supports_freeze_base),
        ):
            if getattr(self, flag) and not supported:
                raise UserError(
                    f"--{flag} is not supported by this recipe ({type(self).__name__}): drop it "
                    "(finetune study's arms need it: use --arms pretrained,scratch for this task)"
                )
        if self.skip_pretrained and not self.compare:
            raise UserError("--skip_pretrained with --compare false leaves nothing to train: drop one of them")
        if self.freeze_base and self.lora:
            raise UserError("--freeze_base and --lora both decide what trains: pick one")


@dataclass
class HubFields:
    """--push_to_hub and its three companions. Mixed into a recipe config: `class XConfig(HubFields,
    TrainingConfig)`."""

    hub_example: ClassVar[str] = "your-user/my-model"  # the repo id the error message suggests

    push_to_hub: bool = field(
        default=False,
        metadata={
            "resume": "may_change",
            "bookkeeping": True,
            "help": "Push the fine-tuned model and its card at the end.",
        },
    )
    hub_repo_id: Optional[str] = field(
        default=None,
        metadata={
            "resume": "may_change",
            "bookkeeping": True,
            "help": "Repository for --push_to_hub: NAME or NAMESPACE/NAME.",
        },
    )
    hub_private: bool = field(
        default=False,
        metadata={"resume": "may_change", "bookkeeping": True, "help": "Create the Hub repository as private."},
    )
    hub_endpoint: Optional[str] = field(
        default=None,
        metadata={
            "resume": "may_change",
            "bookkeeping": True,
            "help": "Hub endpoint (default: HF_ENDPOINT or huggingface.co).",
        },
    )

    def __post_init__(self):
        super().__post_init__()
        if self.push_to_hub and not self.hub_repo_id:
            raise UserError(f"--push_to_hub needs --hub_repo_id NAME (e.g. {self.hub_example})")


# What a field says about itself in its metadata, besides "help", so that no module lists recipe field names:
#   "resume": "may_change"   a resumed run may give it another value: left out of the resume fingerprint
#                            (every optimizer step stays as it was; finetune/core/checkpoints/resume.py)
#   "resume": "may_grow"     ... only a larger one (max_steps, num_epochs: the schedule decays to the new end)
#   "bookkeeping": True      where or how the run is written, not how it trains: not a hyperparameter (the card's
#                            table, the columns `finetune compare` shows)
FIELD_FLAGS = ("resume", "bookkeeping")
SHARED_CONFIGS = (TrainingConfig, HubFields)  # the fields every task's config has


def flagged(*config_classes, key: str, values: tuple = (True,)) -> set[str]:
    """The names of the fields of `config_classes` (dataclasses or instances) whose metadata[key] is in `values`.

    flagged(SentimentConfig, key="bookkeeping") -> {"output_dir", "overwrite", ...}
    """
    return {f.name for cls in config_classes for f in dataclasses.fields(cls) if f.metadata.get(key, None) in values}


def may_change_on_resume(*config_classes) -> set[str]:
    """The fields a resumed run may change (flagged "resume": "may_change" or "may_grow")."""
    return flagged(*config_classes, key="resume", values=("may_change", "may_grow"))


def not_hyperparameters(*config_classes) -> set[str]:
    """The bookkeeping fields of `config_classes`, and always those every task's config shares."""
    return flagged(*SHARED_CONFIGS, *config_classes, key="bookkeeping")


KEEP_WORDS = ("all", "last", "none")


def keep_checkpoints_value(value):
    """--keep_checkpoints as stored: a count N >= 1 (an int, as it always was; "last" is 1), or "all" / "none"."""
    text = str(value).strip().lower()
    if text == "last":
        return 1
    if text in ("all", "none"):
        return text
    if not text.lstrip("-").isdigit() or int(text) < 1:
        raise UserError(
            f"--keep_checkpoints must be a number of at least 1, or one of {', '.join(KEEP_WORDS)}; got {value!r}"
        )
    return int(text)


def checkpoints_kept_while_training(config) -> Optional[int]:
    """How many of the newest resumable checkpoints a training keeps: None keeps all; "none" keeps the newest
    until the run has finished, so a Ctrl-C or a crash can still be resumed."""
    keep = config.keep_checkpoints
    return None if keep == "all" else 1 if keep == "none" else int(keep)


# The checkpoint settings of runs that are never resumed (study cells and search trials start again from nothing):
# no optimizer state while they train, no checkpoint once they have finished. The user's own flags win.
THROWAWAY_CHECKPOINTS = {"keep_checkpoints": "none", "save_only_model": True}


def _parser(config_cls):
    from transformers import HfArgumentParser

    class Parser(HfArgumentParser):
        def error(self, message):  # argparse would print usage and exit; we want one line and exit 2
            raise UserError(f"{message} (see --help for the fields)")

        @staticmethod
        def _parse_dataclass_field(parser, field):
            # HfArgumentParser passes a field's metadata to add_argument: our own flags are not argparse's
            field = copy.copy(field)
            field.metadata = {k: v for k, v in field.metadata.items() if k not in FIELD_FLAGS}
            HfArgumentParser._parse_dataclass_field(parser, field)

    return Parser(config_cls, allow_abbrev=False)


def load_yaml(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {path} does not exist: check the path given to --config")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        mark, context = getattr(err, "problem_mark", None), getattr(err, "context_mark", None)
        mark = mark or context
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        if context is not None and context.line != mark.line:  # an unclosed [ or { shows only where it ends
            where += f" (in what starts at line {context.line + 1})"
        what = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise UserError(f"config file {path} is not valid YAML{where} ({what}): fix the file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(
            f"config file {path} could not be read ({err.__class__.__name__}): pass a UTF-8 YAML file"
        ) from None
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a mapping of field: value, not {type(data).__name__}")
    return data


def parse_config(config_cls: type[C], argv: list[str], values: Optional[dict] = None) -> C:
    """Build a `config_cls` from its defaults < `values` (a YAML's) < --config FILE < --field value flags."""
    argv = list(argv)
    values = dict(values or {})
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            raise UserError("--config needs a file path: --config my.yaml")
        values.update(load_yaml(argv[i + 1]))
        del argv[i : i + 2]

    refuse_secret_flags(argv, values)  # first: a secret is refused as one, even where it is no field
    known = check_keys(config_cls, values)

    # YAML values go through the same argparse typing as flags (YAML reads 3e-5 as a string, for one);
    # they come first, so a flag given later wins.
    parser = _parser(config_cls)
    if "-h" in argv or "--help" in argv:
        parser.print_help()
        raise SystemExit(0)
    tokens = _tokens(values)
    namespace, unknown = parser.parse_known_args(args=tokens + argv)
    if unknown:
        raise UserError(describe_unknown(unknown, known))
    (config,) = parser.parse_args_into_dataclasses(args=tokens + argv)
    return config


def check_keys(config_cls, values: dict) -> set[str]:
    """A config file's keys are fields of `config_cls`, each with one flat value; returns the field names."""
    known = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise UserError(
            f"unknown config key(s) {', '.join(unknown)}: remove them or use one of {', '.join(sorted(known))}"
        )
    list_fields = {f.name for f in dataclasses.fields(config_cls) if "list" in str(f.type)}
    for key, value in values.items():
        if isinstance(value, dict):
            raise UserError(
                f"config key {key} holds a mapping, but fields are flat (e.g. lora_r: 8, not lora: {{r: 8}}): "
                f"fix the config file"
            )
        if isinstance(value, list) and key not in list_fields:
            raise UserError(f"config key {key} holds a list, but takes one value: fix the config file")
    return known


def _tokens(values: dict) -> list[str]:
    """Config-file values as command-line tokens, so that they are typed exactly as flags are."""
    tokens = []
    for key, value in values.items():
        if value is None:
            continue
        tokens.append(f"--{key}")
        tokens.extend(str(v) for v in value) if isinstance(value, list) else tokens.append(str(value))
    return tokens


def defaults_from(yaml_path: Path):
    """Class decorator, written above @dataclass: the task's YAML becomes the config class's own defaults.

    One source of defaults: the Python constructor, the command line, search and study all start from the same
    values, and `--help` shows them. The class returned is a dataclass subclass of the same name whose fields
    named in the YAML have the YAML's values (typed as the command line would type them) as defaults.
    """

    def apply(cls):
        values = load_yaml(yaml_path)
        check_keys(cls, values)
        # Typed as the command line types them (YAML reads 3e-5 as a string); not an instance: validation in
        # __post_init__ may call functions defined below the class in its module.
        typed, _ = _parser(cls).parse_known_args(args=_tokens(values))
        fields_by_name = {f.name: f for f in dataclasses.fields(cls)}
        hints = typing.get_type_hints(cls)
        namespace = {
            "__annotations__": {},
            "__module__": cls.__module__,
            "__qualname__": cls.__qualname__,
            "__doc__": cls.__doc__,
            "defaults_yaml": Path(yaml_path),
        }
        for name in values:
            value, metadata = getattr(typed, name), fields_by_name[name].metadata
            namespace["__annotations__"][name] = hints[name]
            namespace[name] = (
                field(default_factory=lambda v=value: copy.deepcopy(v), metadata=metadata)
                if isinstance(value, (list, dict))
                else field(default=value, metadata=metadata)
            )
        return dataclass(type(cls.__name__, (cls,), namespace))

    return apply


def refuse_secret_flags(argv: list[str], values: dict) -> None:
    """A secret on the command line or in a config file would land in config.yaml, the shell history and `ps`:
    refuse it, without repeating it. The Hub token comes from HF_TOKEN or `hf auth login` only. What counts as a
    secret is finetune/core/secrets.py's one vocabulary, the same the push checks config.yaml with."""
    given = [key for key in values if is_secret_name(key)]
    given += [arg.split("=", 1)[0] for arg in argv if arg.startswith("--") and is_secret_name(arg[2:].split("=", 1)[0])]
    if given:
        raise UserError(
            f"{given[0]} is not accepted by finetune train: a secret would be written into the run directory "
            f"(config.yaml); remove it (its value is not shown here) and pass it through the environment "
            f"(the Hub token: HF_TOKEN or `hf auth login`)"
        )


def describe_unknown(leftover: list[str], known: set) -> str:
    """Name the unknown flags, never the values given with them (a mistyped --hub_tokn hf_... must not be echoed)."""
    import difflib

    flags = [arg.split("=", 1)[0] for arg in leftover if arg.startswith("-") and not _is_number(arg)]
    if not flags:
        return (
            f"{len(leftover)} value(s) on the command line follow no --field (not shown here): every value goes "
            f"after its flag, e.g. --learning_rate 3e-5 (see --help for the fields)"
        )
    hints = []
    for flag in flags:
        close = difflib.get_close_matches(flag.lstrip("-"), sorted(known), n=1)
        hints.append(f"{flag} (did you mean --{close[0]}?)" if close else flag)
    return f"unknown flag(s) {', '.join(hints)}: check the flag names (see --help for the fields)"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def resume_advice(config: TrainingConfig) -> str:
    """What to type after an interruption; followed as written, it continues the run (and does not stop again)."""
    drop = [flag for flag, given in (("--overwrite", config.overwrite),) if given]
    return "resume with the same command plus --resume" + (f" and without {', '.join(drop)}" if drop else "")


def save_config(config, path: Path) -> None:
    atomic_write_text(path, yaml.safe_dump(dataclasses.asdict(config), sort_keys=False))
