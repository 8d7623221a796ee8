"""`finetune study`: run a recipe many times to show what pretraining buys, with error bars.

    finetune study data_efficiency TASK [--sizes 100,300,1000] [--seeds 0,1,2] [--output_dir DIR] [--field value ...]
    finetune study report STUDY_DIR [--out DIR]      redraw the figure and the table from study.json (no training)

For every training-set size and seed, the recipe's own `run(config)` trains the pretrained model and the
from-scratch one (one run directory per cell: DIR/size_00100/seed_0). The subsets are nested, because a
recipe's `--max_train_samples N` keeps the first N examples of the training split shuffled by `--seed`: for a
given seed the 100 examples are the first 100 of the 300 (a size larger than the training split is refused, naming
the largest possible one: it would train on the whole split and be reported as the size asked for). Small sets
get more epochs (at least `--min_examples` examples seen, default 1,000; at most `--max_epochs` passes, default 10)
and stop early on the validation metric
(patience 3, about 5 evaluations per run besides the epoch ends, on at most 200 validation examples unless
--max_eval_samples says otherwise); every cell reports on the whole test split of its seed. The defaults (sizes
100, 300, 1000 x seeds 0, 1, 2) are sized for a 2-core CPU: see README, "Teaching", for the measured time.

What it writes, in DIR:
    study.json            every cell (size, seed, model, metric, steps, seconds) and the summary statistics
    data_efficiency.png   test metric against training examples (log axis): mean and +/- 1 std band per model
    size_*/seed_*/        each cell's run directory (results.json, models, learning curves)
    size_*/seed_*.log     its output; size_*/seed_*.json: the cell's done mark and wall time
and it prints a table: mean +/- std per size and model, and the paired difference (pretrained - scratch, same
seed, same subset) with a 95% t-interval over seeds.

Killed, the same command continues: finished cells are skipped, an unfinished one starts again.
Any `--field value` goes to the recipe (e.g. --model, --learning_rate); the study sets --seed,
--max_train_samples, --num_epochs, --output_dir and --compare itself. Cells are never resumed, so they checkpoint
without optimizer state and keep no checkpoint once finished (--save_only_model, --keep_checkpoints none) unless
those flags are given.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
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
from finetune.reporting.report import save_figure
from finetune.reporting.tables import markdown_table, text_table
from finetune.tasks import registry

STUDY_FILE = "study.json"
FIGURE_FILE = "data_efficiency.png"
# Beside each cell's run directory (never inside it: a run directory holds only what its run wrote):
# size_00100/seed_0.json, the cell's "done" mark with its wall time, and size_00100/seed_0.log, its output.


def done_file(directory: Path) -> Path:
    return directory.parent / f"{directory.name}.json"


# Fields the study sets itself, with the flag to use instead.
STUDY_OWNS = {
    "seed": "--seeds",
    "max_train_samples": "--sizes",
    "resume": "(the study resumes by itself)",
    "output_dir": "--output_dir",
    "compare": "(a study always compares)",
}


# ---- the recipe, through its public API only ---------------------------------------------------------------


def load_recipe(task: str):
    """(module, config class) of a registered task (finetune/tasks/registry.py)."""
    entry = registry.get(task)
    return entry.load(), entry.config_cls


def epochs_for(size: int, min_examples: int, max_epochs: float) -> float:
    """Passes over `size` examples so that small sets still see `min_examples` examples (early stopping guards)."""
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
):
    """The recipe's config for one cell: the user's settings, plus the study's size, seed and schedule.

    A cell evaluates about `evaluations` times (and at each epoch end, as every run does) on at most
    `validation_examples` validation examples, so that many short runs are not dominated by evaluation;
    fields the user gave (`given`) are left as they are.
    """
    epochs = epochs_for(size, min_examples, max_epochs)
    steps_per_epoch = math.ceil(math.ceil(size / base.batch_size) / base.gradient_accumulation_steps)
    changes = dict(
        output_dir=str(cell_dir(study_dir, size, seed)),
        seed=seed,
        max_train_samples=size,
        num_epochs=epochs,
        max_steps=None,
        compare=True,
        overwrite=True,
        resume=False,
    )
    # A cell is never resumed (a killed study starts it again): no optimizer state, no checkpoint left at its end.
    changes.update({name: value for name, value in THROWAWAY_CHECKPOINTS.items() if name not in given})
    if "eval_steps" not in given:
        changes["eval_steps"] = max(1, math.ceil(epochs * steps_per_epoch) // evaluations)
    if "early_stopping_patience" not in given and base.early_stopping_patience is None:
        # Stop after three passes over the data without a better validation score. Counted in evaluations (every
        # eval_steps, and at each epoch end) that is 3 for a small set evaluated once per epoch, more for larger
        # ones: a patience of a few evaluations would stop a large set's run while the model still sits on the
        # majority-class plateau it starts from.
        eval_steps = changes.get("eval_steps", base.eval_steps) or steps_per_epoch
        changes["early_stopping_patience"] = 3 * (1 + (steps_per_epoch - 1) // eval_steps)
    if "max_eval_samples" not in given and hasattr(base, "max_eval_samples"):
        changes["max_eval_samples"] = min(base.max_eval_samples or validation_examples, validation_examples)
    if getattr(base, "push_to_hub", False):
        changes["push_to_hub"] = False  # a study pushes nothing; push a cell afterwards with finetune push
    return dataclasses.replace(base, **changes)


def given_fields(recipe_argv: list[str]) -> frozenset:
    """The fields named by --field flags (a --config file's keys count as the user's too)."""
    names = {flag[2:].split("=")[0] for flag in recipe_argv if flag.startswith("--")}
    if "config" in names:
        names |= set(load_yaml(recipe_argv[recipe_argv.index("--config") + 1]))
    return frozenset(names)


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


def summarize(cells: list[dict]) -> dict:
    """Per size: each model's mean and std over seeds, and the paired pretrained - scratch difference."""
    rows = []
    for size in sorted({c["size"] for c in cells}):
        by_model = {}
        for c in cells:
            if c["size"] == size:
                by_model.setdefault(c["model"], {})[c["seed"]] = c["value"]
        row = {"size": size, "models": {}}
        for model, per_seed in by_model.items():
            mean, std = mean_std(list(per_seed.values()))
            row["models"][model] = {"n": len(per_seed), "mean": mean, "std": std}
        if {"pretrained", "scratch"} <= set(by_model):
            seeds = sorted(set(by_model["pretrained"]) & set(by_model["scratch"]))
            row["difference"] = paired_interval(
                [by_model["pretrained"][s] for s in seeds], [by_model["scratch"][s] for s in seeds]
            )
        rows.append(row)
    return {"sizes": rows}


# ---- the table and the figure ------------------------------------------------------------------------------


def _pm(mean, std, digits):
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


def format_table(study: dict, markdown: bool = False) -> str:
    metric, summary = study["metric"], study["summary"]["sizes"]
    models = list(dict.fromkeys(m for row in summary for m in row["models"]))
    digits = 4 if max((abs(s["mean"]) for row in summary for s in row["models"].values()), default=0) < 10 else 2
    better = "higher" if study["greater_is_better"] else "lower"
    header = ["train examples", *(f"{m} {metric}" for m in models), "pretrained - scratch [95% CI]", "seeds"]
    lines = []
    for row in summary:
        diff = row.get("difference")
        if diff is None:
            gap = "-"
        elif diff["low"] is None:
            gap = f"{diff['mean']:+.{digits}f}"
        else:
            gap = f"{diff['mean']:+.{digits}f} [{diff['low']:+.{digits}f}, {diff['high']:+.{digits}f}]"
        n = max(s["n"] for s in row["models"].values())
        lines.append(
            [
                f"{row['size']:,}",
                *(
                    _pm(row["models"][m]["mean"], row["models"][m]["std"], digits) if m in row["models"] else "-"
                    for m in models
                ),
                gap,
                str(n),
            ]
        )
    note = (
        f"{study['task']}: test {metric} ({better} is better), mean "
        "± std over seeds; paired difference with a 95% t-interval"
    )
    if markdown:
        return "\n".join(markdown_table(header, lines)) + f"\n\n*{note}.*"
    return note + "\n" + text_table(header, lines, align="r")


def plot_study(study: dict, path: Path) -> Path:
    """Test metric against training examples (log x): mean line and a +/- 1 std band per model, gap annotated."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric, summary = study["metric"], study["summary"]["sizes"]
    fig, ax = plt.subplots(figsize=(8, 5))
    colours = {"pretrained": "tab:blue", "scratch": "tab:orange"}
    for model in dict.fromkeys(m for row in summary for m in row["models"]):
        rows = [r for r in summary if model in r["models"]]
        x = [r["size"] for r in rows]
        mean = [r["models"][model]["mean"] for r in rows]
        std = [r["models"][model]["std"] or 0.0 for r in rows]
        (line,) = ax.plot(x, mean, marker="o", color=colours.get(model), label=f"{model} (mean over seeds)")
        ax.fill_between(
            x,
            [m - s for m, s in zip(mean, std)],
            [m + s for m, s in zip(mean, std)],
            color=line.get_color(),
            alpha=0.2,
            linewidth=0,
            label=f"{model} ± 1 std",
        )
    for row in summary:  # the gap at each size: a bracket between the two means, labelled with the paired difference
        diff = row.get("difference")
        if diff is None:
            continue
        low, high = sorted(row["models"][m]["mean"] for m in ("pretrained", "scratch"))
        ax.annotate(
            "", xy=(row["size"], high), xytext=(row["size"], low), arrowprops=dict(arrowstyle="<->", color="grey", lw=1)
        )
        label = f"{diff['mean']:+.3g}" + (
            f"\n±{(diff['high'] - diff['low']) / 2:.2g}" if diff["low"] is not None else ""
        )
        ax.annotate(
            label,
            xy=(row["size"], (low + high) / 2),
            xytext=(6, 0),
            textcoords="offset points",
            va="center",
            fontsize=8,
            color="dimgrey",
        )
    ax.set_xscale("log")
    values = [s["mean"] for r in summary for s in r["models"].values()]
    if not study["greater_is_better"] and min(values) > 0 and max(values) / min(values) > 10:
        ax.set_yscale("log")  # perplexity: scratch models start near the vocabulary size
    seeds = "/".join(str(max(s["n"] for s in row["models"].values())) for row in summary)
    ax.set(
        xlabel="training examples (log scale)",
        ylabel=f"test {metric}",
        title=f"{study['task']}: what pretraining buys, by training-set size\n"
        f"seeds per size: {seeds}; arrows: pretrained - scratch (mean, ±95% t-interval where 2+ seeds)",
    )
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return save_figure(fig, path)


# ---- one cell -----------------------------------------------------------------------------------------------


def read_cell(directory: Path, size: int, seed: int) -> list[dict]:
    """The cell's records, one per model, from the recipe's results.json (the metric is the run's own)."""
    import yaml

    results = json.loads((directory / "results.json").read_text())
    done = json.loads(done_file(directory).read_text())
    config = yaml.safe_load((directory / "config.yaml").read_text())
    metric = results["metric_for_best"]
    records = []
    for model in results["models"]:
        records.append(
            {
                "size": size,
                "seed": seed,
                "model": model["role"],
                "name": model["name"],
                "metric": metric,
                "value": model["test"][metric],
                "steps": model["steps"],
                "seconds": model["train_seconds"],
                "stopped_early": model.get("stopped_early", False),
                "epochs": config["num_epochs"],
                "eval_steps": config["eval_steps"],
                "patience": config["early_stopping_patience"],
                "cell_wall_seconds": done["wall_seconds"],
                "dir": str(directory.relative_to(directory.parent.parent)),
            }
        )
    return records


def check_sizes(module, base, sizes: list[int], seed: int) -> None:
    """Every size fits in the training split, as the recipe's own data step makes it (after validation and test are
    carved): a larger size would train on the whole split and be reported as the size asked for. The split's size
    does not depend on the seed (only which examples fall in it does)."""
    import datasets

    datasets.disable_progress_bars()  # (as every run does)
    available = len(module.build_data(dataclasses.replace(base, seed=seed, max_train_samples=None)).splits["train"])
    too_large = [size for size in sizes if size > available]
    if too_large:
        raise UserError(
            f"--sizes {','.join(map(str, too_large))}: the training split holds only {available:,} examples "
            f"(validation and test carved off): the largest possible size is {available}; pass --sizes up to "
            f"{available}, or a larger dataset"
        )


def run_cell(module, config, directory: Path) -> None:
    """The recipe's own run(), its chatter into the cell's .log beside it; then the cell's done mark."""
    started = time.perf_counter()
    if directory.exists():  # left by a killed study: start this cell again from nothing
        shutil.rmtree(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    with open(directory.parent / f"{directory.name}.log", "w") as log, _output_into(log):
        module.run(config)
    atomic_write_json(done_file(directory), {"wall_seconds": round(time.perf_counter() - started, 2)})


@contextlib.contextmanager
def _output_into(log):
    """A run's prints, progress bars and transformers' log lines into `log`; the study's bar keeps the terminal."""
    import logging

    from transformers.utils import logging as hf_logging

    hf_logging.get_logger("transformers")  # its handler binds to the real stderr now, not to this cell's log
    handlers = [h for h in logging.getLogger("transformers").handlers if isinstance(h, logging.StreamHandler)]
    previous = [h.setStream(log) for h in handlers]
    try:
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            yield
    finally:
        for handler, stream in zip(handlers, previous):
            if stream is not None:
                handler.setStream(stream)


# ---- the study ----------------------------------------------------------------------------------------------


def machine() -> dict:
    facts = machine_facts()
    return {
        "cpu": facts["processor"],
        "cores": facts["cpu_count"],
        "torch_threads": facts["torch_threads"],
        "torch_cpu_capability": facts["torch_cpu_capability"],
    }


def data_efficiency(
    task: str,
    sizes: list[int],
    seeds: list[int],
    study_dir: Path,
    recipe_argv: list[str],
    min_examples: int = 1000,
    max_epochs: float = 10,
    overwrite: bool = False,
) -> dict:
    """Run every (size, seed) cell not yet finished, then write study.json and the figure. Returns the study."""
    from tqdm.auto import tqdm

    module, config_cls = load_recipe(task)
    base = parse_config(config_cls, recipe_argv)  # first: a bad flag is the recipe's one-line error
    given = given_fields(recipe_argv)
    for name in sorted(given & set(STUDY_OWNS)):
        raise UserError(f"--{name} is set by the study for each cell: use {STUDY_OWNS[name]} instead")
    settings = {
        "task": task,
        "sizes": sizes,
        "seeds": seeds,
        "recipe_args": recipe_argv,
        "min_examples": min_examples,
        "max_epochs": max_epochs,
    }
    study_dir = Path(study_dir)
    study_file = study_dir / STUDY_FILE
    if study_file.exists():
        earlier = json.loads(study_file.read_text()).get("settings")
        finished = any(study_dir.glob("size_*/seed_*.json"))
        if earlier != settings and finished and not overwrite:  # (no finished cell: nothing to lose, start afresh)
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
        for old in study_dir.glob("size_*"):
            shutil.rmtree(old)
        study_file.unlink(missing_ok=True)
    study_dir.mkdir(parents=True, exist_ok=True)

    study = {"study": "data_efficiency", "settings": settings, "machine": machine(), "cells": []}
    _collect(study, study_dir, [(size, seed) for seed in seeds for size in sizes])
    atomic_write_json(study_file, study)  # the settings first: a study stopped in its first cell is still ours
    cells = [(size, seed) for seed in seeds for size in sizes]  # seed by seed: a stopped study has whole curves
    todo = [(size, seed) for size, seed in cells if not done_file(cell_dir(study_dir, size, seed)).exists()]
    if todo:
        check_sizes(module, base, sizes, seeds[0])
    if len(todo) < len(cells):
        print(f"continuing the study in {study_dir}: {len(cells) - len(todo)} of {len(cells)} cells already done")
    with tqdm(
        total=len(cells), initial=len(cells) - len(todo), desc="study cells", unit="cell", file=sys.stderr
    ) as bar:
        for size, seed in todo:
            bar.set_postfix(size=size, seed=seed)
            config = cell_config(base, study_dir, size, seed, min_examples, max_epochs, given=given)
            run_cell(module, config, cell_dir(study_dir, size, seed))
            bar.update(1)
            _collect(study, study_dir, cells)
            atomic_write_json(study_file, study)  # after every cell: the numbers so far, readable at once
    _collect(study, study_dir, cells)
    atomic_write_json(study_file, study)
    plot_study(study, study_dir / FIGURE_FILE)
    return study


def _collect(study: dict, study_dir: Path, cells) -> None:
    """(Re)read every finished cell into study["cells"] and recompute the summary."""
    records = []
    for size, seed in cells:
        directory = cell_dir(study_dir, size, seed)
        if done_file(directory).exists():
            records.extend(read_cell(directory, size, seed))
    if not records:
        return
    results = json.loads((study_dir / records[0]["dir"] / "results.json").read_text())
    study["metric"] = results["metric_for_best"]
    study["greater_is_better"] = results.get("greater_is_better", True)
    study["task"] = study["settings"]["task"]
    study["cells"] = records
    study["wall_seconds"] = round(sum({(r["size"], r["seed"]): r["cell_wall_seconds"] for r in records}.values()), 1)
    study["summary"] = summarize(records)


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
    parser.add_argument("--sizes", type=_int_list, default=[100, 300, 1000])
    parser.add_argument("--seeds", type=_int_list, default=[0, 1, 2])
    parser.add_argument("--output_dir", type=Path)
    parser.add_argument("--min_examples", type=int, default=1000, help="examples each cell sees at least")
    parser.add_argument("--max_epochs", type=float, default=10, help="at most this many passes over a small set")
    parser.add_argument("--overwrite", action="store_true")
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    args, recipe_argv = parser.parse_known_args(argv)
    if min(args.sizes) < 1 or args.min_examples < 1 or args.max_epochs < 1:
        raise UserError("--sizes, --min_examples and --max_epochs must be at least 1")
    if len(set(args.sizes)) < len(args.sizes) or len(set(args.seeds)) < len(args.seeds):
        raise UserError("--sizes and --seeds must not repeat a value")
    study_dir = args.output_dir or Path("runs") / f"study_{args.task}"

    started = time.perf_counter()
    try:  # one study per folder at a time: a second one would restart the cells the first is running
        with run_lock(study_dir, f"finetune study data_efficiency {args.task}"):
            study = data_efficiency(
                args.task,
                sorted(args.sizes),
                args.seeds,
                study_dir,
                recipe_argv,
                args.min_examples,
                args.max_epochs,
                args.overwrite,
            )
    except TrainingInterrupted:
        print("study interrupted: finished cells are kept; run the same command to continue", file=sys.stderr)
        return 130
    print(format_table(study))
    print(
        f"wrote {study_dir / STUDY_FILE} and {study_dir / FIGURE_FILE} "
        f" ({time.perf_counter() - started:.0f} s this time; "
        f"{study['wall_seconds']:.0f} s over all cells on {study['machine']['cpu']})"
    )
    return 0


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
    if "summary" not in study:
        raise UserError(f"{path} holds no finished cell yet: run the study first")
    out = args.out or path.parent
    png = plot_study(study, out / FIGURE_FILE)
    table = format_table(study, markdown=True)
    cpu = study.get("machine", {}).get("cpu", "unknown CPU")
    atomic_write_text(
        out / "data_efficiency.md", f"{table}\n\n{study['wall_seconds']:.0f} s over all cells on {cpu}.\n"
    )
    print(format_table(study))
    print(f"wrote {png} and {out / 'data_efficiency.md'}")
    return 0
