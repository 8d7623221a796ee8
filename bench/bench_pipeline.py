"""The image input pipeline alone against what the image recipe's training step consumes, on this machine.

    python bench/bench_pipeline.py                         # the recipe's defaults: DINOv2-S at 56 px, packaged digits
    python bench/bench_pipeline.py --num_workers 4 --image_size 224

Two numbers, each measured alone:

    pipeline   samples/s out of the training DataLoader (finetune.data.pipeline.image_loaders: cached, resized uint8
               pixels; random affine augmentation in --num_workers worker processes), over --pipeline_batches
               batches, with no model; the cache is built (or read) before the clock starts
    training   samples/s of the recipe's training step on batches already in memory: the recipe's own model
               (build_pretrained: frozen blocks, head), normalisation on the device, forward, backward, fused
               AdamW, in the precision --mixed_precision auto chooses here; one untimed step first

The pipeline keeps the model fed when pipeline / training >= 3 (the target): the margin covers a busier machine,
other loaders, and the workers sharing cores with the model. The last line of stdout is
    pipeline_samples_per_second=A training_samples_per_second=B ratio=C
and the numbers go to <output_dir>/bench_pipeline.json.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a checkout

from finetune.core.errors import UserError, user_errors_exit  # noqa: E402

TARGET_RATIO = 3.0


@dataclass
class PipelineBenchConfig:
    model: Optional[str] = field(
        default=None, metadata={"help": "Image checkpoint (default: the recipe's, dinov2-small)."}
    )
    dataset: Optional[str] = field(
        default=None, metadata={"help": "Image dataset (default: the recipe's, the packaged digits)."}
    )
    image_size: Optional[int] = field(
        default=None, metadata={"help": "Input side in pixels (default: the recipe's, 56)."}
    )
    batch_size: Optional[int] = field(
        default=None, metadata={"help": "Examples per batch (default: the recipe's, 32)."}
    )
    num_workers: Optional[int] = field(
        default=None, metadata={"help": "DataLoader workers (default: the pipeline's default, at least 2)."}
    )
    pipeline_batches: int = field(default=60, metadata={"help": "Training batches the pipeline is timed on."})
    training_steps: int = field(default=6, metadata={"help": "Training steps timed (after one untimed)."})
    threads: Optional[int] = field(default=None, metadata={"help": "torch.set_num_threads for the training step."})
    output_dir: str = field(default="bench/results", metadata={"help": "Where bench_pipeline.json goes."})

    def __post_init__(self):
        for name in ("pipeline_batches", "training_steps"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name} must be at least 1, got {getattr(self, name)}")
        if self.num_workers is not None and self.num_workers < 0:
            raise UserError(f"--num_workers must be 0 or more, got {self.num_workers}")


def recipe_config(config: PipelineBenchConfig, out: Path):
    from finetune.core.config import parse_config
    from recipes import image_classification as recipe

    argv = ["--output_dir", str(out / "unused_run"), "--compare", "false"]
    for name in ("model", "dataset", "image_size", "batch_size"):
        if getattr(config, name) is not None:
            argv += [f"--{name}", str(getattr(config, name))]
    return recipe, parse_config(recipe.ImageClassificationConfig, argv)


def time_pipeline(loader, batches: int) -> dict:
    """samples/s out of `loader` over `batches` batches (epochs restart as needed); worker start-up included."""
    from finetune.core.engine import set_epoch

    samples, epoch, started = 0, 0, time.perf_counter()
    while True:
        set_epoch(loader, epoch)
        for i, batch in enumerate(loader):
            samples += len(batch["labels"])
            batches -= 1
            if batches == 0:
                seconds = time.perf_counter() - started
                return {"samples": samples, "seconds": seconds, "samples_per_second": samples / seconds}
        epoch += 1


def time_training(model, batches: list, precision: str, steps: int) -> dict:
    """The recipe's training step on in-memory batches: forward (autocast where chosen), backward, AdamW step."""
    import contextlib

    import torch

    from finetune.core.config import TrainingConfig
    from finetune.core.engine import make_optimizer

    optimizer = make_optimizer(model, TrainingConfig(learning_rate=1e-4))
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if precision == "bf16" else contextlib.nullcontext
    model.train()

    def step(batch):
        with autocast():
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()

    step(batches[0])  # untimed: first-call costs
    samples, started = 0, time.perf_counter()
    for i in range(steps):
        batch = batches[i % len(batches)]
        step(batch)
        samples += len(batch["labels"])
    seconds = time.perf_counter() - started
    return {"samples": samples, "seconds": seconds, "samples_per_second": samples / seconds}


def run(config: PipelineBenchConfig) -> dict:
    import datasets
    import torch
    from accelerate.utils import set_seed

    from finetune.core.atomic_io import atomic_write_json
    from finetune.core.precision import choose, machine_facts
    from finetune.data.pipeline import default_num_workers, image_loaders, normalize_on_device

    datasets.disable_progress_bars()
    out = Path(config.output_dir)
    recipe, rc = recipe_config(config, out)
    workers = config.num_workers if config.num_workers is not None else max(default_num_workers(), 2)
    data = recipe.build_data(rc)
    set_seed(rc.seed)
    model, processor, source, _ = recipe.build_pretrained(rc, data.label_names)
    loaders, notes = image_loaders(
        {"train": data.splits["train"]},
        processor,
        rc.batch_size,
        rc.eval_batch_size,
        rc.seed,
        augment=rc.augment,
        num_workers=workers,
    )
    print(f"- {source.note}\n- {data.provenance.note}\n- {notes[0]}", flush=True)

    pipeline = time_pipeline(loaders["train"], config.pipeline_batches)
    print(f"pipeline: {pipeline['samples_per_second']:.0f} samples/s ({workers} worker(s))", flush=True)

    if config.threads:
        torch.set_num_threads(config.threads)
    choice = choose(rc.mixed_precision, device="cpu")
    print(f"- {choice.line}", flush=True)
    normalize_on_device(model, processor)
    in_memory = []
    for batch in loaders["train"]:
        in_memory.append(batch)
        if len(in_memory) == min(config.training_steps, 4):
            break
    training = time_training(model, in_memory, choice.precision, config.training_steps)
    print(f"training step: {training['samples_per_second']:.1f} samples/s", flush=True)

    ratio = pipeline["samples_per_second"] / training["samples_per_second"]
    line = (
        f"pipeline_samples_per_second={pipeline['samples_per_second']:.1f} "
        f"training_samples_per_second={training['samples_per_second']:.1f} ratio={ratio:.1f}"
    )
    report = {
        "config": dataclasses.asdict(config),
        "recipe": {
            "model": rc.model,
            "dataset": rc.dataset,
            "image_size": rc.image_size,
            "batch_size": rc.batch_size,
            "freeze_layers": rc.freeze_layers,
        },
        "num_workers": workers,
        "precision": choice.precision,
        "pipeline": pipeline,
        "training": training,
        "ratio": ratio,
        "target_ratio": TARGET_RATIO,
        "last_line": line,
        "machine": machine_facts(),
        "note": "measured on a possibly shared machine: noisy",
    }
    atomic_write_json(out / "bench_pipeline.json", report)
    print(f"target: pipeline / training >= {TARGET_RATIO} ({'met' if ratio >= TARGET_RATIO else 'NOT met'})")
    print(line)
    return report


def main(argv=None) -> int:
    from finetune.core.config import parse_config

    with user_errors_exit():
        run(parse_config(PipelineBenchConfig, sys.argv[1:] if argv is None else argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
