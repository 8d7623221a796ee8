"""`finetune compare RUN_DIR [RUN_DIR ...] [--output DIR]`: one table and one chart across finished runs.

It reads only what every run directory holds for later verbs, `results.json` and `config.yaml`, so it works
for any recipe and never loads a model. One row per trained model (a run with the scratch comparison gives two):
the run, the model, its data, the hyperparameters that differ between the runs, train time, samples/s and the
test metrics. Rows are ranked by each run's own `metric_for_best` (in its own direction): runs of different
tasks rank within their metric, one block per metric, best first.

    finetune compare runs/lr-1e-4 runs/lr-3e-5 runs/lora --output runs/compare
        -> compare.json (the rows), compare.md (the table), compare.png (the selection metric, best first)
"""

from __future__ import annotations

import math
from pathlib import Path

from finetune.core.atomic_io import atomic_write_json, atomic_write_text, disk_errors
from finetune.core.config import not_hyperparameters
from finetune.core.errors import CommandParser, UserError, user_errors_exit
from finetune.reporting.report import save_figure
from finetune.reporting.tables import fmt_value, markdown_table, text_table
from finetune.tasks import registry

# Shown in columns of their own (model, data): never among "the hyperparameters that differ".
OWN_COLUMNS = {"model", "dataset"}


def bookkeeping(tasks) -> set[str]:
    """Fields that say where or how a run was written, not how it trained (flagged "bookkeeping" on the fields of
    each task's config, finetune/core/config.py), and those with a column of their own."""
    classes = [registry.get(task).config_cls for task in dict.fromkeys(tasks) if task in registry.TASKS]
    return not_hyperparameters(*classes) | OWN_COLUMNS


def load_run(run_dir: Path) -> tuple[dict, dict]:
    """results.json and config.yaml of a finished run, or a one-line error naming what is missing."""
    import json

    import yaml

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir} is not a folder: pass run directories written by finetune train")
    files = {}
    for name in ("results.json", "config.yaml"):
        path = run_dir / name
        if not path.is_file():
            raise UserError(f"{run_dir} has no {name}: it is not a finished run (finetune train writes it at the end)")
        try:
            files[name] = json.loads(path.read_text()) if name.endswith(".json") else yaml.safe_load(path.read_text())
        except (ValueError, yaml.YAMLError) as err:
            raise UserError(
                f"{path} is not readable ({str(err).splitlines()[0]}): was the run written by this version?"
            ) from None
    results, config = files["results.json"], files["config.yaml"] or {}
    if not isinstance(results, dict) or not results.get("models"):
        raise UserError(f"{run_dir / 'results.json'} lists no models: was the run written by finetune train?")
    return results, config


def differing(configs: list[dict], ignore: set[str]) -> list[str]:
    """Config keys every run has whose values are not all equal (the `ignore`d bookkeeping fields left out)."""
    shared = set.intersection(*(set(c) for c in configs)) if configs else set()
    keys = [k for k in configs[0] if k in shared and k not in ignore]
    return [k for k in keys if len({repr(c[k]) for c in configs}) > 1]


def model_config(config: dict, role: str) -> dict:
    """The configuration a model trained with: the scratch comparison uses scratch_learning_rate."""
    if role == "scratch" and "scratch_learning_rate" in config:
        return {**config, "learning_rate": config["scratch_learning_rate"]}
    return config


def build_rows(run_dirs: list[Path]) -> tuple[list[dict], list[str]]:
    runs = [(Path(d), *load_run(d)) for d in run_dirs]
    names = _short_names([d for d, _, _ in runs])
    ignore = bookkeeping(r.get("task") for _, r, _ in runs)
    keys = differing([model_config(c, m["role"]) for _, r, c in runs for m in r["models"]], ignore)
    rows = []
    for (run_dir, results, config), run_name in zip(runs, names):
        metric = results.get("metric_for_best") or next(iter(results["models"][0]["test"]), None)
        for m in results["models"]:
            hp = model_config(config, m["role"])
            rows.append(
                {
                    "run": run_name,
                    "run_dir": str(run_dir),
                    "task": results.get("task"),
                    "model": m["name"],
                    "role": m["role"],
                    "data": results.get("dataset", config.get("dataset")),
                    "hyperparameters": {k: hp[k] for k in keys},
                    "train_seconds": m.get("train_seconds"),
                    "samples_per_second": m.get("samples_per_second"),
                    "metric": metric,
                    "greater_is_better": results.get("greater_is_better", True),
                    "value": m["test"].get(metric),
                    "test": m["test"],
                }
            )
    return rank(rows), keys


def rank(rows: list[dict]) -> list[dict]:
    """Best first within each selection metric; metric blocks in the order the runs were given."""
    order = list(dict.fromkeys(r["metric"] for r in rows))

    def key(row):
        value = row["value"]
        missing = value is None or (isinstance(value, float) and math.isnan(value))
        return (order.index(row["metric"]), missing, 0 if missing else (-value if row["greater_is_better"] else value))

    return sorted(rows, key=key)


def format_table(rows: list[dict], keys: list[str], markdown: bool = False) -> str:
    metrics = list(dict.fromkeys(k for r in rows for k in r["test"]))
    header = ["#", "run", "model", "role", "data", *keys, "train s", "samples/s", *(f"test {m}" for m in metrics)]
    body = []
    for i, r in enumerate(rows, 1):
        body.append(
            [
                str(i),
                r["run"],
                r["model"],
                r["role"],
                str(r["data"]),
                *(fmt_value(r["hyperparameters"][k]) for k in keys),
                fmt_value(r["train_seconds"], 1),
                fmt_value(r["samples_per_second"], 1),
                *(fmt_value(r["test"].get(m), 4) + ("*" if m == r["metric"] else "") for m in metrics),
            ]
        )
    if markdown:
        return "\n".join(markdown_table(header, body))
    note = "* the run's selection metric (metric_for_best): rows rank on it, best first"
    return text_table(header, body) + "\n" + note


def plot(rows: list[dict], path: Path) -> Path:
    """One horizontal bar chart per selection metric, best at the top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = list(dict.fromkeys(r["metric"] for r in rows))
    blocks = [[r for r in rows if r["metric"] == m] for m in metrics]
    fig, axes = plt.subplots(
        1, len(blocks), figsize=(6.5 * len(blocks), 0.5 * max(map(len, blocks)) + 1.8), squeeze=False
    )
    for ax, metric, block in zip(axes[0], metrics, blocks):
        labels = [f"{r['run']}: {r['model']} ({r['role']})" for r in block][::-1]
        values = [r["value"] if r["value"] is not None else float("nan") for r in block][::-1]
        bars = ax.barh(
            range(len(block)), values, color=["#2a6fbb" if r["role"] != "scratch" else "#d08a2c" for r in block][::-1]
        )
        ax.bar_label(bars, fmt="%.4g", padding=3, fontsize=8)
        ax.set_yticks(range(len(block)), labels, fontsize=8)
        direction = "higher" if block[0]["greater_is_better"] else "lower"
        ax.set(title=f"test {metric} ({direction} is better)", xlabel=metric)
        ax.margins(x=0.15)
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


def compare(run_dirs: list[Path], output: Path) -> dict:
    rows, keys = build_rows(run_dirs)
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    summary = {"runs": [str(d) for d in run_dirs], "differing_hyperparameters": keys, "rows": rows}
    with disk_errors("compare.json", output):
        atomic_write_json(output / "compare.json", summary)
        atomic_write_text(output / "compare.md", format_table(rows, keys, markdown=True) + "\n")
    plot(rows, output / "compare.png")
    return summary


def _short_names(run_dirs: list[Path]) -> list[str]:
    """The shortest path tails that tell the runs apart (runs/a/final and runs/b/final -> a/final, b/final)."""
    parts = [Path(d).resolve().parts for d in run_dirs]
    for n in range(1, max(map(len, parts)) + 1):
        names = ["/".join(p[-n:]) for p in parts]
        if len(set(names)) == len(names):
            return names
    return [str(d) for d in run_dirs]


def main(argv=None) -> int:
    parser = CommandParser(prog="finetune compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR", help="finished run directories")
    parser.add_argument(
        "--output",
        type=Path,
        default=Path("runs/compare"),
        help="where compare.json/.md/.png go (default runs/compare)",
    )
    with user_errors_exit():
        args = parser.parse_args(argv)
        if len(set(map(Path.resolve, args.run_dirs))) < len(args.run_dirs):
            raise UserError("a run directory is given twice: pass each run once")
        summary = compare(args.run_dirs, args.output)
        print(format_table(summary["rows"], summary["differing_hyperparameters"]))
        print(f"wrote {args.output}/compare.json, compare.md, compare.png")
    return 0
