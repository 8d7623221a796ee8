"""`finetune study`: run a recipe many times to show what pretraining buys, with error bars.

    finetune study data_efficiency TASK [--arms pretrained,scratch,scratch_pretrained] [--baseline scratch]
                                        [--sizes 100,1000,full] [--seeds 0,1,2] [--output_dir DIR] [--field value ...]
    finetune study report STUDY_DIR [--out DIR]      redraw the figure and the table from study.json (no training)

The arms, each trained through the recipe's own `run(config)` on the same subsets:
    pretrained           the pretrained checkpoint (Hub or packaged), every weight fine-tuned
    scratch              our transformer (finetune.models.scratch) from random initialisation
    scratch_pretrained   our transformer started from `finetune pretrain` (--scratch_init RUN; without it the study
                         pretrains once, with the pretraining recipe's defaults, into DIR/pretrain)
    probe                the pretrained model frozen, only a new linear head trained (learning rate 1e-3)
    lora                 the pretrained model with LoRA adapters (learning rate 5e-4)
The pretrained and scratch arms share one run of the recipe (its own comparison); the others run alone. One run
directory per (size, seed, run): DIR/size_00100/seed_0/base, .../scratch_pretrained, ...

Sizes are nested: a recipe's `--max_train_samples N` keeps the first N examples of the training split shuffled by
`--seed`, so for a given seed the 100 examples are the first 100 of the 1,000. `full` is the recipe's own
training set (its --max_train_samples, else the whole split): the right end of the curve is the recipe's own run.
A size larger than the training split is refused, naming the largest possible one. Every cell is trained to
convergence for its size: at least `--min_examples` examples seen (default 3,000), at most `--max_epochs` passes
(default 20), never less than one pass, and it stops early on the validation metric (patience: three passes over
the data); every cell reports on the whole test split of its seed. The largest size is by far the slowest, so it
runs only the first `--largest_seeds` seeds (default 1). The defaults are sized for a 2-core CPU: see README.

What it writes, in DIR:
    study.json            every arm of every cell (size, seed, metric, steps, seconds), the summary statistics,
                          and warnings
    data_efficiency.png   test metric against training examples (log axis): mean and +/- 1 std band per arm
    size_*/seed_*/RUN/    each run directory (results.json, models, learning curves); RUN.log its output and
                          RUN.json its done mark
and it prints a table: mean +/- std per size and arm, and each arm's paired difference from `--baseline` (same
seed, same subset) with a 95% t-interval over seeds; with pretrained, scratch and scratch_pretrained, the share of
the gap between random initialisation and someone else's pretraining that our own pretraining closes. A curve
that falls with more data is a sign of an undertrained cell: the study says which cells to lengthen.

Killed, the same command continues: finished runs are skipped, an unfinished one starts again.
Any `--field value` goes to the recipe (e.g. --model, --learning_rate); the study sets --seed,
--max_train_samples, --num_epochs, --output_dir, --compare and what the arms need itself. Runs are never resumed,
so they checkpoint without optimizer state and keep no checkpoint once finished (--save_only_model,
--keep_checkpoints none) unless those flags are given.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Optional

from finetune.core.atomic_io import atomic_write_json, atomic_write_text
from finetune.core.config import THROWAWAY_CHECKPOINTS, load_yaml, parse_config
from finetune.core.engine import TrainingInterrupted
from finetune.core.errors import CommandParser, UserError, user_errors_exit
from finetune.core.precision import machine_facts
from finetune.core.run_directory import run_lock
from finetune.reporting.card import public
from finetune.reporting.report import save_figure
from finetune.reporting.tables import markdown_table, text_table
from finetune.tasks import registry

STUDY_FILE = "study.json"
FIGURE_FILE = "data_efficiency.png"
PRETRAIN_DIR = "pretrain"  # where the study pretrains our transformer when no --scratch_init is given
# Beside each run directory (never inside it: a run directory holds only what its run wrote):
# size_00100/seed_0/base.json, the run's "done" mark with its wall time, and size_00100/seed_0/base.log, its output.


def done_file(directory: Path) -> Path:
    return directory.parent / f"{directory.name}.json"


# Fields the study sets itself, with the flag to use instead.
STUDY_OWNS = {
    "seed": "--seeds",
    "max_train_samples": "--sizes",
    "resume": "(the study resumes by itself)",
    "output_dir": "--output_dir",
    "compare": "(a study always compares: --arms)",
    "skip_pretrained": "--arms",
    "freeze_base": "--arms probe",
    "lora": "--arms lora",
    "scratch_init": "--scratch_init of the study (before the task)",
}


# ---- the arms -----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Arm:
    name: str
    what: str  # one line for the table's note and the figure's legend
    run: str  # the recipe run that trains it (the pretrained and scratch arms share the recipe's own "base" run)
    role: str  # its entry in that run's results.json ("pretrained" or "scratch")
    changes: tuple = ()  # recipe fields it sets, unless the user gave them (learning rates)


ARMS = {
    arm.name: arm
    for arm in (
        Arm("pretrained", "the pretrained checkpoint, fully fine-tuned", "base", "pretrained"),
        Arm("scratch", "our transformer from random initialisation", "base", "scratch"),
        Arm(
            "scratch_pretrained",
            "our transformer after `finetune pretrain`",
            "scratch_pretrained",
            "scratch",
        ),
        Arm(
            "probe",
            "the pretrained model frozen, a linear head trained",
            "probe",
            "pretrained",
            (("learning_rate", 1e-3),),
        ),
        Arm("lora", "the pretrained model with LoRA adapters", "lora", "pretrained", (("learning_rate", 5e-4),)),
    )
}
DEFAULT_ARMS = ["pretrained", "scratch", "scratch_pretrained"]


def parse_arms(text: str) -> list[str]:
    arms = [a.strip() for a in text.split(",") if a.strip()]
    unknown = [a for a in arms if a not in ARMS]
    if unknown or not arms:
        raise UserError(f"--arms {text!r}: unknown arm {', '.join(unknown) or '(none)'}; use some of {', '.join(ARMS)}")
    if len(set(arms)) < len(arms):
        raise UserError(f"--arms {text!r} repeats an arm")
    return arms


def runs_of(arms: list[str]) -> dict[str, list[str]]:
    """The recipe runs a cell needs, each with the arms it trains: {"base": ["pretrained", "scratch"], ...}."""
    runs: dict[str, list[str]] = {}
    for name in arms:
        runs.setdefault(ARMS[name].run, []).append(name)
    return runs


def run_changes(run: str, arms: list[str], scratch_init: Optional[str], given: frozenset) -> dict:
    """The recipe fields of one run: which models it trains, and what its arm needs."""
    if run == "base":
        changes = dict(compare="scratch" in arms, skip_pretrained="pretrained" not in arms)
    elif run == "scratch_pretrained":
        changes = dict(compare=True, skip_pretrained=True, scratch_init=scratch_init)
    elif run == "probe":
        changes = dict(compare=False, freeze_base=True)
    else:
        changes = dict(compare=False, lora=True)
    for arm in arms:
        changes.update({name: value for name, value in ARMS[arm].changes if name not in given})
    return changes


# ---- the recipe, through its public API only ---------------------------------------------------------------


def load_recipe(task: str):
    """(module, config class) of a registered task (finetune/tasks/registry.py)."""
    entry = registry.get(task)
    return entry.load(), entry.config_cls


def epochs_for(size: int, min_examples: int, max_epochs: float) -> float:
    """Passes over `size` examples: small sets see at least `min_examples` examples, at most `max_epochs` passes,
    every set at least one pass (early stopping guards the small ones)."""
    return float(min(max_epochs, max(1.0, min_examples / size)))


def cell_dir(study_dir: Path, size: int, seed: int) -> Path:
    return Path(study_dir) / f"size_{size:05d}" / f"seed_{seed}"


def cell_config(
    base,
    study_dir: Path,
    size: int,
    seed: int,
    min_examples: int,
    max_epochs: float,
    evaluations: int = 5,
    validation_examples: int = 200,
    given: frozenset = frozenset(),
    run: str = "base",
    changes: Optional[dict] = None,
):
    """The recipe's config for one run of a cell: the user's settings, plus the study's size, seed and schedule,
    plus `changes` (what the run's arms need; default: the recipe's own comparison, both models).

    A run evaluates about `evaluations` times (and at each epoch end, as every run does) on a tenth as many
    validation examples as it trains on, at least `validation_examples` and at most the recipe's own
    --max_eval_samples: small runs are not dominated by evaluation, and the largest picks its best weights on as
    many examples as the recipe's own run (on 200, checkpoints within noise of each other tie, and the first of
    them, far from the end, was kept). Fields the user gave (`given`) are left as they are.
    """
    epochs = epochs_for(size, min_examples, max_epochs)
    steps_per_epoch = math.ceil(math.ceil(size / base.batch_size) / base.gradient_accumulation_steps)
    fields = dict(
        output_dir=str(cell_dir(study_dir, size, seed) / run),
        seed=seed,
        max_train_samples=size,
        num_epochs=epochs,
        max_steps=None,
        compare=True,
        overwrite=True,
        resume=False,
    )
    fields.update(changes or {})
    # A run is never resumed (a killed study starts it again): no optimizer state, no checkpoint left at its end.
    fields.update({name: value for name, value in THROWAWAY_CHECKPOINTS.items() if name not in given})
    if "eval_steps" not in given:
        fields["eval_steps"] = max(1, math.ceil(epochs * steps_per_epoch) // evaluations)
    if "early_stopping_patience" not in given and base.early_stopping_patience is None:
        # Stop after three passes over the data without a better validation score. Counted in evaluations (every
        # eval_steps, and at each epoch end) that is 3 for a small set evaluated once per epoch, more for larger
        # ones: a patience of a few evaluations would stop a large set's run while the model still sits on the
        # majority-class plateau it starts from.
        eval_steps = fields.get("eval_steps", base.eval_steps) or steps_per_epoch
        fields["early_stopping_patience"] = 3 * (1 + (steps_per_epoch - 1) // eval_steps)
    if "max_eval_samples" not in given and hasattr(base, "max_eval_samples"):
        wanted = max(validation_examples, size // 10)
        fields["max_eval_samples"] = min(base.max_eval_samples or wanted, wanted)
    if getattr(base, "push_to_hub", False):
        fields["push_to_hub"] = False  # a study pushes nothing; push a run afterwards with finetune push
    return dataclasses.replace(base, **fields)


def given_fields(recipe_argv: list[str]) -> frozenset:
    """The fields named by --field flags (a --config file's keys count as the user's too)."""
    names = {flag[2:].split("=")[0] for flag in recipe_argv if flag.startswith("--")}
    if "config" in names:
        names |= set(load_yaml(recipe_argv[recipe_argv.index("--config") + 1]))
    return frozenset(names)


def full_size(module, base, seed: int) -> tuple[int, int]:
    """(`full`, the recipe's own training set: its --max_train_samples, else the whole split; the whole split's
    size), as the recipe's data step makes it, after validation and test are carved."""
    import datasets

    datasets.disable_progress_bars()  # (as every run does)
    available = len(module.build_data(dataclasses.replace(base, seed=seed, max_train_samples=None)).splits["train"])
    return min(available, base.max_train_samples or available), available


def check_sizes(sizes: list[int], available: int) -> None:
    """Every size fits in the training split: a larger size would train on the whole split and be reported as the
    size asked for. The split's size does not depend on the seed (only which examples fall in it does)."""
    too_large = [size for size in sizes if size > available]
    if too_large:
        raise UserError(
            f"--sizes {','.join(map(str, too_large))}: the training split holds only {available:,} examples "
            f"(validation and test carved off): the largest possible size is {available}; pass --sizes up to "
            f"{available}, or a larger dataset"
        )


# ---- pretraining our transformer for the scratch_pretrained arm --------------------------------------------------


def pretraining_for(
    task: str, base, study_dir: Path, seeds: list[int], scratch_init: Optional[str], pretrain_argv: list[str]
):
    """(the folder the scratch_pretrained arm starts from, what study.json says about it).

    Given --scratch_init, that run; else the pretraining recipe's defaults (recipes/configs/pretraining.yaml: its
    corpus and step budget) and the flags in --pretrain, with the task's objective, tokenizer and scratch-model size,
    run once into DIR/pretrain (a killed
    study pretrains again from nothing). Its tweets corpus leaves out the validation and test tweets of every seed
    of the study, so no cell is tested on text the model was pretrained on."""
    from recipes import pretraining

    if scratch_init:
        directory = Path(scratch_init)
    else:
        directory = Path(study_dir) / PRETRAIN_DIR
        if not done_file(directory).exists():
            config = dataclasses.replace(
                parse_config(pretraining.PretrainConfig, pretrain_argv),
                objective="clm" if registry.get(task).pipeline_tag == "text-generation" else "mlm",
                output_dir=str(directory),
                tokenizer=base.model,
                scratch_d_model=base.scratch_d_model,
                scratch_layers=base.scratch_layers,
                sentiment_split_seeds=sorted(set(pretraining.PretrainConfig().sentiment_split_seeds) | set(seeds)),
                overwrite=True,
                mixed_precision=base.mixed_precision,
                **{name: value for name, value in THROWAWAY_CHECKPOINTS.items()},
            )
            run_logged(pretraining, config, directory)
    results = json.loads((directory / "results.json").read_text())
    after = results["held_out"]["after"]
    facts = {
        "objective": results["objective"],
        "corpus": public(results["corpus"]),  # (a file or folder by its name: no local path)
        "steps": results["steps"],
        "wall_seconds": results["wall_seconds"],
        "held_out_after": after,
        "run": directory.name,  # (a folder name: no local path in a study.json that is published)
    }
    accuracy = after.get("masked_accuracy", after.get("accuracy"))
    facts["description"] = (
        f"`finetune pretrain {results['objective']}` on {facts['corpus']}, {results['steps']} steps in "
        f"{results['wall_seconds']:.0f} s"
        + (f", held-out masked-token accuracy {accuracy:.3f}" if isinstance(accuracy, (int, float)) else "")
    )
    return str(directory), facts


# ---- one run ------------------------------------------------------------------------------------------------


def read_run(directory: Path, size: int, seed: int, arms: list[str]) -> list[dict]:
    """The run's records, one per arm, from the recipe's results.json (the metric is the run's own)."""
    import yaml

    results = json.loads((directory / "results.json").read_text())
    done = json.loads(done_file(directory).read_text())
    config = yaml.safe_load((directory / "config.yaml").read_text())
    metric = results["metric_for_best"]
    by_role = {model["role"]: model for model in results["models"]}
    records = []
    for arm in arms:
        model = by_role[ARMS[arm].role]
        records.append(
            {
                "size": size,
                "seed": seed,
                "arm": arm,
                "name": model["name"],
                "metric": metric,
                "value": model["test"][metric],
                "steps": model["steps"],
                "seconds": model["train_seconds"],
                "stopped_early": model.get("stopped_early", False),
                "epochs": config["num_epochs"],
                "eval_steps": config["eval_steps"],
                "patience": config["early_stopping_patience"],
                "run_wall_seconds": done["wall_seconds"],
                "dir": str(directory.relative_to(directory.parent.parent.parent)),
            }
        )
    return records


def run_logged(module, config, directory: Path) -> None:
    """The recipe's own run(), its chatter into RUN.log beside it; then the run's done mark."""
    started = time.perf_counter()
    if directory.exists():  # left by a killed study: start this run again from nothing
        shutil.rmtree(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    with open(directory.parent / f"{directory.name}.log", "w") as log, _output_into(log):
        module.run(config)
    atomic_write_json(done_file(directory), {"wall_seconds": round(time.perf_counter() - started, 2)})


# (the name earlier code and notebooks use)
run_cell = run_logged


@contextlib.contextmanager
def _output_into(log):
    """A run's prints, progress bars and transformers' log lines into `log`; the study's bar keeps the terminal."""
    import logging

    from transformers.utils import logging as hf_logging

    hf_logging.get_logger("transformers")  # its handler binds to the real stderr now, not to this run's log
    handlers = [h for h in logging.getLogger("transformers").handlers if isinstance(h, logging.StreamHandler)]
    previous = [h.setStream(log) for h in handlers]
    try:
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            yield
    finally:
        for handler, stream in zip(handlers, previous):
            if stream is not None:
                handler.setStream(stream)


# ---- statistics ---------------------------------------------------------------------------------------------


def mean_std(values: list[float]) -> tuple[float, Optional[float]]:
    """Mean and sample standard deviation (n - 1); the std is None for a single value."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def paired_interval(a: list[float], b: list[float], confidence: float = 0.95) -> dict:
    """The mean of a - b over paired seeds, with a two-sided t-interval (n - 1 degrees of freedom)."""
    from scipy.stats import t as student_t

    differences = [x - y for x, y in zip(a, b)]
    mean, std = mean_std(differences)
    n = len(differences)
    if std is None:
        return {"n": n, "mean": mean, "std": None, "low": None, "high": None}
    half = student_t.ppf(0.5 + confidence / 2, n - 1) * std / math.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "low": mean - half, "high": mean + half}


def summarize(cells: list[dict], baseline: Optional[str] = None) -> dict:
    """Per size: each arm's mean and std over seeds; each other arm's paired difference from `baseline` (same seed,
    same subset); and, with pretrained, scratch and scratch_pretrained, the share of the gap between the scratch
    and the pretrained arm that scratch_pretrained closes (from the means)."""
    rows = []
    for size in sorted({c["size"] for c in cells}):
        by_arm: dict[str, dict[int, float]] = {}
        for c in cells:
            if c["size"] == size:
                by_arm.setdefault(c["arm"], {})[c["seed"]] = c["value"]
        row = {"size": size, "arms": {}, "differences": {}}
        for arm, per_seed in by_arm.items():
            mean, std = mean_std(list(per_seed.values()))
            row["arms"][arm] = {"n": len(per_seed), "mean": mean, "std": std}
        if baseline in by_arm:
            for arm in by_arm:
                seeds = sorted(set(by_arm[arm]) & set(by_arm[baseline]))
                if arm != baseline and seeds:
                    row["differences"][arm] = paired_interval(
                        [by_arm[arm][s] for s in seeds], [by_arm[baseline][s] for s in seeds]
                    )
        if {"pretrained", "scratch", "scratch_pretrained"} <= set(by_arm):
            means = {arm: row["arms"][arm]["mean"] for arm in ("pretrained", "scratch", "scratch_pretrained")}
            gap = means["pretrained"] - means["scratch"]
            if gap != 0:
                row["gap_closed"] = (means["scratch_pretrained"] - means["scratch"]) / gap
        rows.append(row)
    return {"baseline": baseline, "sizes": rows}


def falling_curves(summary: dict, greater_is_better: bool) -> list[str]:
    """A curve that gets worse with more data, by more than the spread over seeds at either size: the larger
    cells are undertrained (too few passes, or early stopping on a noisy validation score). One line per fall."""
    warnings = []
    rows = summary["sizes"]
    arms = dict.fromkeys(arm for row in rows for arm in row["arms"])
    for arm in arms:
        points = [(row["size"], row["arms"][arm]) for row in rows if arm in row["arms"]]
        for (small, a), (large, b) in zip(points, points[1:]):
            worse = a["mean"] - b["mean"] if greater_is_better else b["mean"] - a["mean"]
            if worse > max(a["std"] or 0.0, b["std"] or 0.0):
                warnings.append(
                    f"{arm} falls from {a['mean']:.4g} at {small:,} examples to {b['mean']:.4g} at {large:,}: the "
                    f"{large:,}-example cells are likely undertrained; lengthen them (raise --min_examples or "
                    "--max_epochs, or the recipe's --num_epochs / --learning_rate)"
                )
    return warnings


# ---- the table and the figure ------------------------------------------------------------------------------


def _pm(mean, std, digits):
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


def _difference(diff: Optional[dict], digits: int) -> str:
    if diff is None:
        return "-"
    if diff["low"] is None:
        return f"{diff['mean']:+.{digits}f}"
    return f"{diff['mean']:+.{digits}f} [{diff['low']:+.{digits}f}, {diff['high']:+.{digits}f}]"


def percent(share: float) -> str:
    """-0.0028 -> "0%", not "-0%": a sign only where the rounded share has one."""
    return f"{round(100 * share)}%"


def format_table(study: dict, markdown: bool = False) -> str:
    metric, summary = study["metric"], study["summary"]
    rows = summary["sizes"]
    arms = list(dict.fromkeys(arm for row in rows for arm in row["arms"]))
    baseline = summary.get("baseline")
    compared = [arm for arm in arms if arm != baseline and any(arm in row["differences"] for row in rows)]
    gap = any("gap_closed" in row for row in rows)
    digits = 4 if max((abs(s["mean"]) for row in rows for s in row["arms"].values()), default=0) < 10 else 2
    better = "higher" if study["greater_is_better"] else "lower"
    header = [
        "train examples",
        *(f"{arm} {metric}" for arm in arms),
        *(f"{arm} - {baseline} [95% CI]" for arm in compared),
        *(["gap closed"] if gap else []),
        "seeds",
    ]
    lines = []
    for row in rows:
        lines.append(
            [
                f"{row['size']:,}",
                *(
                    _pm(row["arms"][a]["mean"], row["arms"][a]["std"], digits) if a in row["arms"] else "-"
                    for a in arms
                ),
                *(_difference(row["differences"].get(a), digits) for a in compared),
                *([percent(row["gap_closed"]) if "gap_closed" in row else "-"] if gap else []),
                str(max(s["n"] for s in row["arms"].values())),
            ]
        )
    note = (
        f"{study['task']}: test {metric} ({better} is better), mean ± std over seeds; paired difference from "
        f"{baseline} with a 95% t-interval"
        + ("; gap closed: (scratch_pretrained - scratch) / (pretrained - scratch)" if gap else "")
    )
    if markdown:
        return "\n".join(markdown_table(header, lines)) + f"\n\n*{note}.*"
    return note + "\n" + text_table(header, lines, align="r")


COLOURS = {
    "pretrained": "tab:blue",
    "scratch": "tab:orange",
    "scratch_pretrained": "tab:green",
    "probe": "tab:purple",
    "lora": "tab:brown",
}


def plot_study(study: dict, path: Path) -> Path:
    """Test metric against training examples (log x): a mean line and a +/- 1 std band per arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric, rows = study["metric"], study["summary"]["sizes"]
    fig, ax = plt.subplots(figsize=(8, 5))
    for arm in dict.fromkeys(a for row in rows for a in row["arms"]):
        points = [r for r in rows if arm in r["arms"]]
        x = [r["size"] for r in points]
        mean = [r["arms"][arm]["mean"] for r in points]
        std = [r["arms"][arm]["std"] or 0.0 for r in points]
        what = ARMS[arm].what if arm in ARMS else arm
        (line,) = ax.plot(x, mean, marker="o", color=COLOURS.get(arm), label=f"{arm}: {what}")
        ax.fill_between(
            x,
            [m - s for m, s in zip(mean, std)],
            [m + s for m, s in zip(mean, std)],
            color=line.get_color(),
            alpha=0.15,
            linewidth=0,
        )
    for row in rows:  # the share of the gap our own pretraining closes, under each size
        if "gap_closed" in row:
            ax.annotate(
                f"gap closed\n{percent(row['gap_closed'])}",
                xy=(row["size"], 0),
                xycoords=("data", "axes fraction"),
                xytext=(0, 4),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=8,
                color="dimgrey",
            )
    ax.set_xscale("log")
    values = [s["mean"] for r in rows for s in r["arms"].values()]
    if not study["greater_is_better"] and min(values) > 0 and max(values) / min(values) > 10:
        ax.set_yscale("log")  # perplexity: scratch models start near the vocabulary size
    seeds = "/".join(str(max(s["n"] for s in row["arms"].values())) for row in rows)
    ax.set(
        xlabel="training examples (log scale)",
        ylabel=f"test {metric}",
        title=f"{study['task']}: what pretraining buys, by training-set size\n"
        f"mean over seeds ({seeds} per size), band: ± 1 std",
    )
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return save_figure(fig, path)


# ---- the study ----------------------------------------------------------------------------------------------


def machine() -> dict:
    facts = machine_facts()
    return {
        "cpu": facts["processor"],
        "cores": facts["cpu_count"],
        "torch_threads": facts["torch_threads"],
        "torch_cpu_capability": facts["torch_cpu_capability"],
    }


def plan(sizes: list[int], seeds: list[int], largest_seeds: Optional[int]) -> list[tuple[int, int]]:
    """(size, seed) cells, seed by seed (a stopped study has whole curves); the largest size only for the first
    `largest_seeds` seeds."""
    largest = max(sizes)
    keep = seeds[:largest_seeds] if largest_seeds else seeds
    return [(size, seed) for seed in seeds for size in sizes if size != largest or seed in keep]


def data_efficiency(
    task: str,
    sizes: list,
    seeds: list[int],
    study_dir: Path,
    recipe_argv: list[str],
    min_examples: int = 3000,
    max_epochs: float = 20,
    overwrite: bool = False,
    arms: Optional[list[str]] = None,
    baseline: Optional[str] = None,
    largest_seeds: Optional[int] = None,
    scratch_init: Optional[str] = None,
    pretrain_argv: tuple = (),
) -> dict:
    """Run every (size, seed) cell's runs not yet finished, then write study.json and the figure. Returns the study.

    `sizes` may hold "full" (the recipe's own training set); `pretrain_argv`: flags of the study's own pretraining
    (when scratch_pretrained is an arm and no `scratch_init` run is given)."""
    from tqdm.auto import tqdm

    arms = arms or list(DEFAULT_ARMS)
    baseline = baseline or ("scratch" if "scratch" in arms else arms[0])
    if baseline not in arms:
        raise UserError(f"--baseline {baseline} is not one of the arms ({', '.join(arms)}): add it to --arms")
    module, config_cls = load_recipe(task)
    base = parse_config(config_cls, recipe_argv)  # first: a bad flag is the recipe's one-line error
    given = given_fields(recipe_argv)
    for name in sorted(given & set(STUDY_OWNS)):
        raise UserError(f"--{name} is set by the study for each run: use {STUDY_OWNS[name]} instead")
    settings = {
        "task": task,
        "arms": arms,
        "baseline": baseline,
        "sizes": list(sizes),
        "seeds": seeds,
        "largest_seeds": largest_seeds,
        "recipe_args": recipe_argv,
        "min_examples": min_examples,
        "max_epochs": max_epochs,
        "scratch_init": Path(scratch_init).name if scratch_init else None,  # (a folder name: no local path)
        "pretrain_args": list(pretrain_argv),
    }
    study_dir = Path(study_dir)
    study_file = study_dir / STUDY_FILE
    if study_file.exists():
        earlier = json.loads(study_file.read_text()).get("settings")
        finished = any(study_dir.glob("size_*/seed_*/*.json"))
        if earlier != settings and finished and not overwrite:  # (no finished run: nothing to lose, start afresh)
            raise UserError(
                f"{study_dir} holds a study with other settings ({_differences(earlier, settings)}): "
                f"use the same command to continue it, --overwrite to start again, or another --output_dir"
            )
        overwrite = overwrite or earlier != settings
    elif study_dir.is_dir() and any(study_dir.iterdir()) and not overwrite:
        raise UserError(
            f"{study_dir} already holds files that are not a study: choose another --output_dir or pass --overwrite"
        )
    if overwrite:
        for old in [*study_dir.glob("size_*"), study_dir / PRETRAIN_DIR]:
            shutil.rmtree(old, ignore_errors=True)
        for old in (study_file, done_file(study_dir / PRETRAIN_DIR)):
            old.unlink(missing_ok=True)
    study_dir.mkdir(parents=True, exist_ok=True)

    study = {"study": "data_efficiency", "settings": settings, "machine": machine(), "cells": []}
    atomic_write_json(study_file, study)  # the settings first: a study stopped in its first run is still ours
    numbers = [s for s in sizes if s != "full"]
    full, available = full_size(module, base, seeds[0])
    check_sizes(numbers, available)
    sizes = sorted(set(numbers) | ({full} if "full" in sizes else set()))
    study["sizes"] = sizes  # the numbers "full" stood for
    cells = plan(sizes, seeds, largest_seeds)
    runs = runs_of(arms)
    jobs = [(size, seed, run) for size, seed in cells for run in runs]
    todo = [job for job in jobs if not done_file(cell_dir(study_dir, job[0], job[1]) / job[2]).exists()]
    _collect(study, study_dir, cells, runs)  # a continued study's finished runs, readable at once
    atomic_write_json(study_file, study)
    if len(todo) < len(jobs):
        print(f"continuing the study in {study_dir}: {len(jobs) - len(todo)} of {len(jobs)} runs already done")
    if "scratch_pretrained" in arms:
        if scratch_init:
            print(f"the scratch_pretrained arm starts from the pretraining run {scratch_init}")
        else:
            print(f"pretraining our transformer for the scratch_pretrained arm (log: {study_dir / PRETRAIN_DIR}.log)")
        scratch_init, study["pretraining"] = pretraining_for(
            task, base, study_dir, seeds, scratch_init, list(pretrain_argv)
        )
    with tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc="study runs", unit="run", file=sys.stderr) as bar:
        for size, seed, run in todo:
            bar.set_postfix(size=size, seed=seed, run=run)
            changes = run_changes(run, runs[run], scratch_init, given)
            config = cell_config(
                base, study_dir, size, seed, min_examples, max_epochs, given=given, run=run, changes=changes
            )
            run_logged(module, config, cell_dir(study_dir, size, seed) / run)
            bar.update(1)
            _collect(study, study_dir, cells, runs)
            atomic_write_json(study_file, study)  # after every run: the numbers so far, readable at once
    _collect(study, study_dir, cells, runs)
    atomic_write_json(study_file, study)
    plot_study(study, study_dir / FIGURE_FILE)
    return study


def _collect(study: dict, study_dir: Path, cells, runs: dict[str, list[str]]) -> None:
    """(Re)read every finished run into study["cells"] and recompute the summary and the warnings."""
    records = []
    for size, seed in cells:
        for run, arms in runs.items():
            directory = cell_dir(study_dir, size, seed) / run
            if done_file(directory).exists():
                records.extend(read_run(directory, size, seed, arms))
    if not records:
        return
    results = json.loads((study_dir / records[0]["dir"] / "results.json").read_text())
    study["metric"] = results["metric_for_best"]
    study["greater_is_better"] = results.get("greater_is_better", True)
    study["task"] = study["settings"]["task"]
    study["cells"] = records
    study["wall_seconds"] = round(sum({r["dir"]: r["run_wall_seconds"] for r in records}.values()), 1)
    study["summary"] = summarize(records, study["settings"]["baseline"])
    study["warnings"] = falling_curves(study["summary"], study["greater_is_better"])


def _differences(earlier: Optional[dict], now: dict) -> str:
    if not earlier:
        return "unknown settings"
    changed = [k for k in now if earlier.get(k) != now[k]]
    return ", ".join(f"{k}: {earlier.get(k)} -> {now[k]}" for k in changed)


# ---- the command --------------------------------------------------------------------------------------------


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one number")
    return values


def _size_list(text: str) -> list:
    """Comma-separated whole numbers, and `full` (the recipe's own training set)."""
    words = [v.strip() for v in text.split(",") if v.strip()]
    numbers = _int_list(",".join(w for w in words if w != "full")) if any(w != "full" for w in words) else []
    return numbers + (["full"] if "full" in words else [])


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    with user_errors_exit():
        if not argv or argv[0] in ("-h", "--help"):
            print(__doc__.strip())
            return 0
        kind, rest = argv[0], argv[1:]
        if kind == "data_efficiency":
            return _data_efficiency_command(rest)
        if kind == "report":
            return _report_command(rest)
        raise UserError(f"unknown study {kind!r}: use data_efficiency (or report STUDY_DIR)")


def _data_efficiency_command(argv: list[str]) -> int:
    parser = CommandParser(prog="finetune study data_efficiency", add_help=False, allow_abbrev=False)
    parser.add_argument("task")
    parser.add_argument("--arms", type=parse_arms, default=list(DEFAULT_ARMS))
    parser.add_argument("--baseline", help="the arm every other is compared with (default: scratch)")
    parser.add_argument("--sizes", type=_size_list, default=[100, 1000, "full"])
    parser.add_argument("--seeds", type=_int_list, default=[0, 1, 2])
    parser.add_argument("--largest_seeds", type=int, default=1, help="seeds of the largest size (0: all)")
    parser.add_argument("--scratch_init", help="a `finetune pretrain` run for the scratch_pretrained arm")
    parser.add_argument(
        "--pretrain", default="", help='flags of the study\'s own pretraining, e.g. --pretrain "--max_steps 200"'
    )
    parser.add_argument("--output_dir", type=Path)
    parser.add_argument("--min_examples", type=int, default=3000, help="examples each run sees at least")
    parser.add_argument("--max_epochs", type=float, default=20, help="at most this many passes over a small set")
    parser.add_argument("--overwrite", action="store_true")
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    args, recipe_argv = parser.parse_known_args(argv)
    numbers = [s for s in args.sizes if s != "full"]
    if (numbers and min(numbers) < 1) or args.min_examples < 1 or args.max_epochs < 1 or args.largest_seeds < 0:
        raise UserError("--sizes, --min_examples and --max_epochs must be at least 1, --largest_seeds at least 0")
    if len(set(args.sizes)) < len(args.sizes) or len(set(args.seeds)) < len(args.seeds):
        raise UserError("--sizes and --seeds must not repeat a value")
    if (args.scratch_init or args.pretrain) and "scratch_pretrained" not in args.arms:
        raise UserError("--scratch_init and --pretrain are for the scratch_pretrained arm: add it to --arms")
    if args.scratch_init and args.pretrain:
        raise UserError("--pretrain sets up the study's own pretraining, --scratch_init names one: pick one")
    study_dir = args.output_dir or Path("runs") / f"study_{args.task}"

    started = time.perf_counter()
    try:  # one study per folder at a time: a second one would restart the runs the first is running
        with run_lock(study_dir, f"finetune study data_efficiency {args.task}"):
            study = data_efficiency(
                args.task,
                args.sizes,
                args.seeds,
                study_dir,
                recipe_argv,
                args.min_examples,
                args.max_epochs,
                args.overwrite,
                arms=args.arms,
                baseline=args.baseline,
                largest_seeds=args.largest_seeds or None,
                scratch_init=args.scratch_init,
                pretrain_argv=shlex.split(args.pretrain),
            )
    except TrainingInterrupted:
        print("study interrupted: finished runs are kept; run the same command to continue", file=sys.stderr)
        return 130
    print(format_table(study))
    for warning in study.get("warnings", []):
        print(f"warning: {warning}")
    print(
        f"wrote {study_dir / STUDY_FILE} and {study_dir / FIGURE_FILE} "
        f" ({time.perf_counter() - started:.0f} s this time; "
        f"{study['wall_seconds']:.0f} s over all runs on {study['machine']['cpu']})"
    )
    return 0


def report_text(study: dict) -> str:
    """data_efficiency.md: the table, the warnings, and where the numbers come from (what a test compares with)."""
    cpu = study.get("machine", {}).get("cpu", "unknown CPU")
    lines = [format_table(study, markdown=True), ""]
    lines += [f"**Warning:** {w}" for w in study.get("warnings", [])] + ([""] if study.get("warnings") else [])
    pretraining = study.get("pretraining")
    if pretraining:
        lines += [f"scratch_pretrained starts from: {pretraining.get('description', pretraining)}.", ""]
    lines.append(f"{study['wall_seconds']:.0f} s over all runs on {cpu}.")
    return "\n".join(lines) + "\n"


def _report_command(argv: list[str]) -> int:
    parser = CommandParser(
        prog="finetune study report", description="redraw a study's figure and table from its study.json"
    )
    parser.add_argument("study", type=Path, help="a study folder, or its study.json")
    parser.add_argument(
        "--out", type=Path, help="folder for data_efficiency.png and data_efficiency.md (default: the study's)"
    )
    args = parser.parse_args(argv)
    path = args.study / STUDY_FILE if args.study.is_dir() else args.study
    if not path.is_file():
        raise UserError(f"no {STUDY_FILE} at {path}: pass a folder written by finetune study data_efficiency")
    study = json.loads(path.read_text())
    if "summary" not in study or "arms" not in study["summary"]["sizes"][0]:
        raise UserError(f"{path} holds no finished run of an arms study yet: run the study first")
    out = args.out or path.parent
    png = plot_study(study, out / FIGURE_FILE)
    atomic_write_text(out / "data_efficiency.md", report_text(study))
    print(format_table(study))
    print(f"wrote {png} and {out / 'data_efficiency.md'}")
    return 0
