"""make bench: this engine's fine-tuning speed against transformers.Trainer, in one process, on one machine.

    make bench                                           # packaged MiniLM on packaged tweets, ~5 minutes
    make bench ARGS="--train_samples 1024 --rounds 3"    # longer, steadier
    python bench/bench_engine.py --model path/to/folder --train_samples 64 --rounds 1 --peak_size 256   # smoke

Contenders, each fine-tuning a fresh copy of the same model on the same examples, batch size, learning rate,
weight decay, warmup + linear decay and gradient clipping, for one epoch:

    engine                finetune.core.engine.train with finetune.data.text.make_loaders (length-grouped batches), in
                          the precision --mixed_precision chooses (auto: bf16 on a CPU that does bf16 natively)
    trainer               transformers.Trainer with its defaults (random batches, its default collator and optimizer)
    trainer_grouped       the same Trainer with train_sampling_strategy="group_by_length"
    trainer_bf16_grouped  the same, plus bf16=True: the strongest Trainer setting on a native-bf16 CPU. Where bf16
                          is emulated (AVX2: ~40x slower matmuls) it trains on --bf16_trainer_samples examples only
                          (default: two batches there), so that the benchmark still ends; the table says so.

Every contender is timed by the same clock: from the start of its first training forward pass to the end of
its last optimizer step (a forward pre-hook and a global optimizer post-hook), so model loading, data loader
construction and end-of-run checkpointing are outside it for all of them. Contenders run in rounds, their order
rotated each round, and the matmul peak of the precision the engine trains in (fp32, or bf16 where auto chose
it) is measured just before and just after the engine's run in each round, the faster of the two counting: on a
shared machine the medians of the per-round ratios are what to read.

Useful model FLOP/s = 6 x non-embedding parameters x real (non-padding) tokens per second, the usual estimate
of forward + backward matmul work; padding positions are computed but not counted.

The last line of stdout is:
    speedup_vs_trainer=X.XX speedup_vs_trainer_grouped=Y.YY speedup_vs_trainer_bf16_grouped=Z.ZZ peak_fraction=P.PP
Numbers go to <output_dir>/bench_engine.json, a bar chart to <output_dir>/bench_engine.png.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a checkout

from finetune.core.errors import UserError, user_errors_exit  # noqa: E402
from finetune.reporting.tables import text_table  # noqa: E402

CONTENDERS = ("engine", "trainer", "trainer_grouped", "trainer_bf16_grouped")
TRAINERS = CONTENDERS[1:]
LABELS = {
    "engine": "this engine (length-grouped)",
    "trainer": "Trainer defaults",
    "trainer_grouped": "Trainer group_by_length",
    "trainer_bf16_grouped": "Trainer bf16 group_by_length",
}
SPEEDUPS = {
    "speedup_vs_trainer": "trainer",
    "speedup_vs_trainer_grouped": "trainer_grouped",
    "speedup_vs_trainer_bf16_grouped": "trainer_bf16_grouped",
}
# Issue 15's targets: on a CPU without native bf16 (the engine trains fp32) the fp32 ones; with it, the bf16 ones.
STEAL_WARNING = 0.05  # above this share of stolen CPU time the table says its wall-clock numbers are unreliable
PRECISION_NAMES = {"no": "fp32", "bf16": "bf16"}
TARGETS = {
    "no": {"speedup_vs_trainer": 1.3, "speedup_vs_trainer_grouped": 1.0, "peak_fraction": 0.55},
    "bf16": {
        "speedup_vs_trainer": 2.5,
        "speedup_vs_trainer_grouped": 1.8,
        "speedup_vs_trainer_bf16_grouped": 1.0,
        "peak_fraction": 0.40,
    },
}


@dataclass
class BenchConfig:
    model: str = field(
        default="minilm", metadata={"help": "Offline alias, local folder or Hub name of a sequence classifier."}
    )
    dataset: str = field(default="tweets", metadata={"help": "'tweets' (packaged) or any dataset the recipes accept."})
    train_samples: int = field(
        default=2048, metadata={"help": "Training examples per contender per round (one epoch)."}
    )
    rounds: int = field(default=2, metadata={"help": "Rounds; each runs every contender once, order rotated."})
    batch_size: int = field(default=32, metadata={"help": "Examples per batch, the same for every contender."})
    max_length: int = field(default=64, metadata={"help": "Truncate texts to this many tokens."})
    learning_rate: float = field(default=5e-5, metadata={"help": "AdamW peak learning rate (all contenders)."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (all contenders)."})
    warmup_ratio: float = field(
        default=0.06, metadata={"help": "Linear warmup share, then linear decay (all contenders)."}
    )
    threads: Optional[int] = field(
        default=None, metadata={"help": "torch.set_num_threads for everything (default: torch's)."}
    )
    mixed_precision: str = field(
        default="auto", metadata={"help": "The engine's --mixed_precision (auto: see finetune/core/precision.py)."}
    )
    bf16_trainer_samples: Optional[int] = field(
        default=None,
        metadata={
            "help": "Examples for the Trainer bf16 contender (default: all, or two batches where bf16 is emulated)."
        },
    )
    peak_size: int = field(default=2048, metadata={"help": "Side of the square matmul that measures the peak."})
    peak_reps: int = field(default=5, metadata={"help": "Matmuls per peak measurement; the fastest counts."})
    output_dir: str = field(
        default="bench/results", metadata={"help": "Where bench_engine.json and bench_engine.png go."}
    )
    seed: int = field(default=42, metadata={"help": "Seeds the example choice, the new head and the batch orders."})

    def __post_init__(self):
        for name in ("train_samples", "rounds", "batch_size", "peak_size", "peak_reps"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name} must be at least 1, got {getattr(self, name)}")
        if self.train_samples < 2 * self.batch_size:
            raise UserError(
                f"--train_samples ({self.train_samples}) must cover at least two batches of --batch_size "
                f"{self.batch_size}: raise it to {2 * self.batch_size} or more"
            )
        if self.max_length < 2:
            raise UserError(f"--max_length must be at least 2, got {self.max_length}")
        if (
            self.bf16_trainer_samples is not None
            and not 2 * self.batch_size <= self.bf16_trainer_samples <= self.train_samples
        ):
            raise UserError(
                f"--bf16_trainer_samples must be between two batches ({2 * self.batch_size}) and "
                f"--train_samples ({self.train_samples}), got {self.bf16_trainer_samples}"
            )
        if self.mixed_precision not in ("auto", "no", "bf16"):
            raise UserError(f"--mixed_precision must be auto, no or bf16 on a CPU, got {self.mixed_precision!r}")
        if self.threads is not None and self.threads < 1:
            raise UserError(f"--threads must be at least 1 (or left unset), got {self.threads}")
        if not 0 <= self.warmup_ratio < 1:
            raise UserError(f"--warmup_ratio must be in [0, 1), got {self.warmup_ratio}")


# ---- measuring ----------------------------------------------------------------------------------------------


class StepClock:
    """Same clock for every contender: first training forward start -> last optimizer step end.

    A forward pre-hook on the model counts the examples and tokens it is fed (from the attention mask), and a
    global optimizer post-hook marks the end of each step, whichever training loop drives the model.
    """

    def __init__(self, model):
        from torch.optim.optimizer import register_optimizer_step_post_hook

        self.start = self.end = self.cpu_start = self.cpu_end = None
        self.samples = self.real_tokens = self.padded_tokens = self.forwards = self.steps = 0
        self._handles = [
            model.register_forward_pre_hook(self._on_forward, with_kwargs=True),
            register_optimizer_step_post_hook(self._on_step),
        ]

    def _on_forward(self, module, args, kwargs):
        if not module.training:
            return
        if self.start is None:
            self.start, self.cpu_start, self.faults_start = time.perf_counter(), time.process_time(), _minor_faults()
            self.steal_start = _steal_seconds()
        mask = kwargs.get("attention_mask")
        ids = kwargs.get("input_ids")
        self.forwards += 1
        self.samples += int(ids.shape[0])
        self.real_tokens += int(mask.sum()) if mask is not None else ids.numel()
        self.padded_tokens += ids.numel()

    def _on_step(self, optimizer, args, kwargs):
        self.steps += 1
        self.end, self.cpu_end, self.faults_end = time.perf_counter(), time.process_time(), _minor_faults()
        self.steal_end = _steal_seconds()

    def close(self) -> dict:
        for handle in self._handles:
            handle.remove()
        if self.start is None or self.end is None:
            raise RuntimeError("the training loop never ran a forward pass and an optimizer step")
        seconds = self.end - self.start
        return {
            "seconds": seconds,
            "samples": self.samples,
            "steps": self.steps,
            "real_tokens": self.real_tokens,
            "padded_tokens": self.padded_tokens,
            "samples_per_second": self.samples / seconds,
            "padding_fraction": 1 - self.real_tokens / self.padded_tokens,
            # every position the model computed on, padding included: the loop's raw speed
            "computed_tokens_per_second": self.padded_tokens / seconds,
            # CPU time of this process (all its threads): what the run cost, less inflated by other
            # processes on a busy machine than wall time (exact with --threads 1, where nothing spin-waits)
            "cpu_seconds": self.cpu_end - self.cpu_start,
            # pages the kernel had to map (and zero) for this process: memory freed and allocated again
            "page_faults_per_step": (self.faults_end - self.faults_start) / max(self.steps, 1),
            # share of the machine's CPU time the hypervisor gave to other guests while this ran (a virtual
            # machine's "steal"): wall-clock speed then says as much about the neighbours as about the loop
            "steal_fraction": _steal_fraction(self.steal_start, self.steal_end, seconds),
        }


def _steal_seconds() -> Optional[float]:
    """CPU seconds stolen from this (virtual) machine since boot, all CPUs together; None where /proc/stat is absent."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")  # cpu user nice system idle iowait irq softirq steal
    except (OSError, IndexError, ValueError):
        return None


def _steal_fraction(start: Optional[float], end: Optional[float], seconds: float) -> Optional[float]:
    if start is None or end is None or seconds <= 0:
        return None
    return (end - start) / (seconds * (os.cpu_count() or 1))


def _minor_faults() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def matmul_peak(size: int, reps: int, dtype_name: str = "float32") -> tuple[float, float]:
    """FLOP/s of the fastest of `reps` square matmuls in `dtype_name` (2 n^3 FLOPs each), after one untimed warmup.

    Returns (per wall second, per CPU second of this process).
    """
    from finetune.core.precision import matmul_flops

    return matmul_flops(dtype_name, size, reps)


# ---- the contenders -----------------------------------------------------------------------------------------


def fresh_model(config: BenchConfig, source, tokenizer, label_names):
    """The same starting weights for every contender: the checkpoint plus a head drawn from the same seed."""
    from transformers import set_seed

    from finetune.models.loading import load_sequence_classifier

    set_seed(config.seed)
    return load_sequence_classifier(source, tokenizer, label_names)


def run_engine(config: BenchConfig, model, tokenizer, tokenized, workdir: Path) -> dict:
    from finetune.core import engine
    from finetune.core.config import TrainingConfig
    from finetune.data.text import make_loaders

    loaders = make_loaders(tokenized, tokenizer, config.batch_size, config.batch_size, config.seed)
    training = TrainingConfig(
        output_dir=str(workdir),
        num_epochs=1,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        warmup_ratio=config.warmup_ratio,
        max_grad_norm=1.0,
        mixed_precision=config.mixed_precision,
        compare=False,
    )
    clock = StepClock(model)
    try:
        result = engine.train(model, {"train": loaders["train"]}, None, training, workdir, name="engine")
    finally:
        measured = clock.close()
    # The engine's own timer (its loop, checkpoint excluded) as a cross-check of the shared clock.
    measured["engine_own_samples_per_second"] = result.samples_per_second
    measured["precision"] = result.accelerator.mixed_precision
    return measured


def run_trainer(config: BenchConfig, model, tokenizer, train, workdir: Path, grouped: bool, bf16: bool = False) -> dict:
    """Trainer with its defaults, except what must match the engine's run (schedule, decay) or save time."""
    from transformers import Trainer, TrainingArguments

    args = TrainingArguments(
        output_dir=str(workdir),
        use_cpu=True,
        seed=config.seed,
        num_train_epochs=1,
        per_device_train_batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        warmup_steps=config.warmup_ratio,
        max_grad_norm=1.0,
        eval_strategy="no",
        save_strategy="no",
        logging_strategy="no",
        report_to="none",
        train_sampling_strategy="group_by_length" if grouped else "random",
        bf16=bf16,
    )
    # No data_collator: Trainer's default for a tokenizer is DataCollatorWithPadding (dynamic padding).
    trainer = Trainer(model=model, args=args, train_dataset=train, processing_class=tokenizer)
    clock = StepClock(model)
    try:
        trainer.train()
    finally:
        measured = clock.close()
    measured["optimizer"] = str(args.optim)
    measured["precision"] = "bf16" if bf16 else "no"
    return measured


# ---- the benchmark ------------------------------------------------------------------------------------------


def load_data(config: BenchConfig, tokenizer):
    import datasets
    from datasets import DatasetDict

    from finetune.data.text import load_text_classification, tokenize

    datasets.disable_progress_bars()
    data = load_text_classification(config.dataset, seed=config.seed)
    train = data.splits["train"].shuffle(seed=config.seed)
    if len(train) < config.train_samples:
        raise UserError(
            f"dataset {config.dataset!r} has {len(train)} training rows, fewer than --train_samples "
            f"{config.train_samples}: lower --train_samples"
        )
    subset = DatasetDict({"train": train.select(range(config.train_samples))})
    return tokenize(subset, tokenizer, config.max_length), data


def warm_up(config: BenchConfig, model, tokenizer, tokenized) -> None:
    """Two untimed forward/backward passes, so that no contender pays the process's first-call costs."""
    from transformers import DataCollatorWithPadding

    rows = [tokenized["train"][i] for i in range(config.batch_size)]
    batch = DataCollatorWithPadding(tokenizer, return_tensors="pt")(
        [{k: v for k, v in r.items() if k != "length"} for r in rows]
    )
    model.train()
    for _ in range(2):
        model(**batch).loss.backward()
    model.zero_grad(set_to_none=True)


def summarize(rounds: list[dict]) -> dict:
    def median(values):
        return statistics.median(values)

    keys = ("samples_per_second", "computed_tokens_per_second", "useful_flops_per_second", "padding_fraction")
    summary = {name: {key: median([r[name][key] for r in rounds]) for key in keys} for name in CONTENDERS}
    for speedup, name in SPEEDUPS.items():
        summary[speedup] = median([r["engine"]["samples_per_second"] / r[name]["samples_per_second"] for r in rounds])
    summary["peak_flops_per_second"] = median([r["peak_flops_per_second"] for r in rounds])
    summary["peak_fraction"] = median(
        [r["engine"]["useful_flops_per_second"] / r["peak_flops_per_second"] for r in rounds]
    )
    # The same numbers in CPU time: a cross-check when other processes share the machine.
    cpu = lambda r, name: r[name]["cpu_seconds"] / r[name]["samples"]  # noqa: E731  (per example: sample counts may differ)
    steal = [
        r[name]["steal_fraction"] for r in rounds for name in CONTENDERS if r[name].get("steal_fraction") is not None
    ]
    summary["steal_fraction_max"] = max(steal) if steal else None
    summary["cpu_time"] = {
        speedup: median([cpu(r, name) / cpu(r, "engine") for r in rounds]) for speedup, name in SPEEDUPS.items()
    }
    summary["cpu_time"]["peak_fraction"] = median(
        [r["engine"]["useful_flops_per_cpu_second"] / r["peak_flops_per_cpu_second"] for r in rounds]
    )
    return summary


def last_line(summary: dict) -> str:
    return " ".join(f"{key}={summary[key]:.2f}" for key in (*SPEEDUPS, "peak_fraction"))


def format_table(
    config: BenchConfig, summary: dict, rounds: list[dict], threads: int, precision: str, bf16_samples: int
) -> str:
    header = ["contender", "samples/s", "padding", "computed tok/s", "useful GFLOP/s", "of peak", "engine is"]
    rows = []
    peak = summary["peak_flops_per_second"]
    for name in CONTENDERS:
        s = summary[name]
        ratio = summary["engine"]["samples_per_second"] / s["samples_per_second"]
        rows.append(
            [
                LABELS[name],
                f"{s['samples_per_second']:.2f}",
                f"{s['padding_fraction']:.1%}",
                f"{s['computed_tokens_per_second']:.0f}",
                f"{s['useful_flops_per_second'] / 1e9:.2f}",
                f"{s['useful_flops_per_second'] / peak:.1%}",
                f"{ratio:.2f}x",
            ]
        )
    lines = [text_table(header, rows, align="lr")]
    per_round = ", ".join(
        f"{r['engine']['samples_per_second'] / r['trainer']['samples_per_second']:.2f}" for r in rounds
    )
    lines.append(
        f"medians of {len(rounds)} round(s) x {config.train_samples} examples, batch {config.batch_size}, "
        f"max length {config.max_length}, {threads} torch thread(s); the engine trained in {PRECISION_NAMES[precision]}"
    )
    lines.append(
        f"{PRECISION_NAMES[precision]} matmul peak ({config.peak_size}x{config.peak_size}): {peak / 1e9:.1f} GFLOP/s; "
        f"speedup vs Trainer defaults per round: {per_round}"
    )
    if bf16_samples < config.train_samples:
        lines.append(
            f"note: Trainer bf16 trained on {bf16_samples} of the {config.train_samples} examples: this CPU has no "
            f"native bf16 (emulated bf16 matmuls are many times slower than fp32), so a full epoch would not end"
        )
    engine_group, trainer_group = megabatch_examples(config)
    if trainer_group < engine_group:
        lines.append(
            f"note: on {config.train_samples} examples Trainer's group_by_length sorts within megabatches of "
            f"{trainer_group} examples (it keeps >= 4 of them; 50 batches from {200 * config.batch_size} "
            f"examples up), this engine within {engine_group}: part of the gap to it is that padding"
        )
    if summary["steal_fraction_max"] is not None and summary["steal_fraction_max"] > STEAL_WARNING:
        lines.append(
            f"warning: the hypervisor took up to {summary['steal_fraction_max']:.0%} of this machine's CPU time "
            f"while a contender ran (steal, /proc/stat): wall-clock numbers are unreliable; rerun when it is quiet"
        )
    c = summary["cpu_time"]
    lines.append(
        "in CPU time instead (less sensitive to a busy machine): "
        + " ".join(f"{key}={c[key]:.2f}" for key in (*SPEEDUPS, "peak_fraction"))
    )
    lines.append(
        f"targets ({'native-bf16' if precision == 'bf16' else 'fp32-only'} CPU): "
        + ", ".join(f"{k} >= {v}" for k, v in TARGETS[precision].items())
    )
    return "\n".join(lines)


def megabatch_examples(config: BenchConfig) -> tuple[int, int]:
    """Examples sorted together by length: (this engine, Trainer's group_by_length), on train_samples examples.

    The engine's LengthGroupedBatchSampler uses 50 batches (or all examples if fewer); Trainer's
    get_length_grouped_indices uses min(n // (4 * batch), 50) batches (at least one), so that a small dataset
    still has 4 megabatches. On a full-size dataset both sort 50 batches.
    """
    from finetune.data.sampling import LengthGroupedBatchSampler

    n, bs = config.train_samples, config.batch_size
    engine = min(n, LengthGroupedBatchSampler([1] * n, bs).group_size * bs)
    trainer = min(n, max(min(n // (4 * bs), 50), 1) * bs)
    return engine, trainer


def plot(path: Path, summary: dict, rounds: list[dict], precision: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from finetune.reporting.report import save_figure

    fig, (ax_speed, ax_flops) = plt.subplots(1, 2, figsize=(11, 3.8))
    xs = range(len(CONTENDERS))
    colors = ["tab:green", "tab:gray", "tab:blue", "tab:purple"]
    names = [LABELS[n].replace(" (", "\n(").replace(" group_by", "\ngroup_by") for n in CONTENDERS]
    ax_speed.bar(xs, [summary[n]["samples_per_second"] for n in CONTENDERS], color=colors)
    for x, name in zip(xs, CONTENDERS):
        ax_speed.plot(
            [x] * len(rounds), [r[name]["samples_per_second"] for r in rounds], "k.", label="rounds" if x == 0 else None
        )
    ax_speed.set_xticks(list(xs), names, fontsize=7)
    ax_speed.set(title="fine-tuning throughput (median, dots: rounds)", ylabel="samples / s")
    ax_speed.legend(fontsize=8)
    peak = summary["peak_flops_per_second"] / 1e9
    target = TARGETS[precision]["peak_fraction"]
    ax_flops.bar(xs, [summary[n]["useful_flops_per_second"] / 1e9 for n in CONTENDERS], color=colors)
    ax_flops.axhline(peak, color="k", ls="--", label=f"{PRECISION_NAMES[precision]} matmul peak {peak:.1f}")
    ax_flops.axhline(target * peak, color="tab:red", ls=":", label=f"target {target:.0%} of peak")
    ax_flops.set_xticks(list(xs), names, fontsize=7)
    ax_flops.set(title="useful model FLOP/s (real tokens only)", ylabel="GFLOP / s", ylim=(0, 1.35 * peak))
    ax_flops.legend(fontsize=8)
    for ax in (ax_speed, ax_flops):
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def run(config: BenchConfig) -> dict:
    import torch
    import transformers
    from accelerate.state import AcceleratorState

    from finetune.core.atomic_io import atomic_write_json
    from finetune.core.precision import choose, machine_facts
    from finetune.models.loading import load_tokenizer, non_embedding_parameters, resolve

    if config.threads:
        torch.set_num_threads(config.threads)
    threads = torch.get_num_threads()
    transformers.logging.set_verbosity_error()  # Trainer's notices and weight-loading bars would bury the table
    transformers.logging.disable_progress_bar()

    # What the engine will train in (it decides again, identically, and prints the same line), and so which
    # peak counts and what the Trainer bf16 contender can afford.
    choice = choose(config.mixed_precision, device="cpu")
    print(f"- engine: {choice.line}")
    precision = choice.precision
    bf16_samples = config.bf16_trainer_samples
    if bf16_samples is None:
        native = precision == "bf16" or choose("auto", device="cpu").precision == "bf16"
        bf16_samples = config.train_samples if native else 2 * config.batch_size
    peak_dtype = "bfloat16" if precision == "bf16" else "float32"

    source = resolve(config.model)
    tokenizer = load_tokenizer(source)
    tokenized, data = load_data(config, tokenizer)
    bf16_train = tokenized["train"].select(range(bf16_samples))
    print(f"- {source.note}\n- {data.provenance.note}")
    model = fresh_model(config, source, tokenizer, data.label_names)
    flops_per_token = 6 * non_embedding_parameters(model)
    warm_up(config, model, tokenizer, tokenized)
    del model

    rounds = []
    with tempfile.TemporaryDirectory(prefix="bench_engine.") as tmp:
        for r in range(config.rounds):
            result = {}
            order = CONTENDERS[r % len(CONTENDERS) :] + CONTENDERS[: r % len(CONTENDERS)]
            for name in order:
                print(f"round {r + 1}/{config.rounds}: {LABELS[name]}", flush=True)
                # Accelerate keeps one process-wide state whose mixed precision can't change: each contender
                # starts from none, as it would in a process of its own.
                AcceleratorState._reset_state(reset_partial_state=True)
                model = fresh_model(config, source, tokenizer, data.label_names)
                workdir = Path(tmp) / f"{name}_{r}"
                if name == "engine":
                    # The peak brackets the engine's run: measured just before and just after it, the faster
                    # counts. On a machine whose speed drifts, one sample taken at a slow moment would inflate
                    # peak_fraction; the better of two can only understate it.
                    before = matmul_peak(config.peak_size, config.peak_reps, peak_dtype)
                    measured = run_engine(config, model, tokenizer, tokenized, workdir)
                    after = matmul_peak(config.peak_size, config.peak_reps, peak_dtype)
                    result["peak_samples"] = [before[0], after[0]]
                    result["peak_flops_per_second"] = max(before[0], after[0])
                    result["peak_flops_per_cpu_second"] = max(before[1], after[1])
                else:
                    bf16 = name == "trainer_bf16_grouped"
                    measured = run_trainer(
                        config,
                        model,
                        tokenizer,
                        bf16_train if bf16 else tokenized["train"],
                        workdir,
                        grouped=name != "trainer",
                        bf16=bf16,
                    )
                measured["useful_flops_per_second"] = flops_per_token * measured["real_tokens"] / measured["seconds"]
                measured["useful_flops_per_cpu_second"] = (
                    flops_per_token * measured["real_tokens"] / measured["cpu_seconds"]
                )
                result[name] = measured
                print(
                    f"  {measured['samples_per_second']:.2f} samples/s, padding {measured['padding_fraction']:.1%}, "
                    f"{measured['page_faults_per_step']:.0f} page faults a step",
                    flush=True,
                )
                del model
            AcceleratorState._reset_state(reset_partial_state=True)
            rounds.append(result)

    summary = summarize(rounds)
    line = last_line(summary)
    out_dir = Path(config.output_dir)
    report = {
        "config": dataclasses.asdict(config),
        "model_source": source.note,
        "data_source": data.provenance.note,
        "engine_precision": precision,
        "engine_precision_reason": choice.reason,
        "bf16_trainer_samples": bf16_samples,
        "peak_dtype": peak_dtype,
        "non_embedding_parameters": flops_per_token // 6,
        "flops_per_real_token": flops_per_token,
        "megabatch_examples": dict(zip(("engine", "trainer_grouped"), megabatch_examples(config))),
        "machine": {**machine_facts(), "transformers": transformers.__version__},
        "targets": TARGETS[precision],
        "summary": summary,
        "rounds": rounds,
        "last_line": line,
        "note": "medians over rounds; the machine may be shared, so single numbers are noisy",
    }
    atomic_write_json(out_dir / "bench_engine.json", report)
    plot(out_dir / "bench_engine.png", summary, rounds, precision)
    print(format_table(config, summary, rounds, threads, precision, bf16_samples))
    print(f"wrote {out_dir / 'bench_engine.json'} and {out_dir / 'bench_engine.png'}")
    print(line)
    return report


def main(argv=None) -> int:
    from finetune.core.config import parse_config

    with user_errors_exit():
        run(parse_config(BenchConfig, sys.argv[1:] if argv is None else argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
