"""`finetune search TASK`: hyperparameter search with Optuna, kept in a real study database.

    finetune search sentiment --n_trials 20                         # SQLite: runs/search-sentiment/search.db
    finetune search sentiment --n_trials 30 --storage postgresql://user:pass@db-host/optuna --study_name team-sst
    finetune search sentiment --space my_space.yaml --max_train_samples 4000 --lora

Every trial is the recipe's own `run(config)` (no second training path) with sampled values replacing fields of
the configuration; the recipe's flags (`--model`, `--dataset`, `--max_train_samples`, ...) set what is not searched.

- Sampler: TPE, seeded from `--seed` (or `--sampler_seed`: --seed also fixes the data split, which every trial
  must share, so parallel processes differ by --sampler_seed only). A process that joins or continues a study
  seeds it from the seed and the number of trials already stored, so it samples new points, not the first ones again.
- Pruner: the median rule, fed by the engine's own validation evaluations (`finetune.core.engine.on_evaluation`):
  after evaluation k, a trial worse than the median of earlier trials at evaluation k stops at once and its run
  directory says so (trial.json). Evaluations are counted, not steps,
  so trials with different batch sizes compare at the same point (each epoch end, when only epochs evaluate).
- Direction: the metric the recipe selects its best weights on, and finetune.core.metrics.greater_is_better's rule.
- `--n_trials` is the number of finished trials (complete or pruned) the study should hold. Running the same
  command again continues the study: an interrupted search finishes its trials, none repeated; a finished one
  grows when --n_trials grows. Several processes (machines) on one storage share the study; each may run one
  trial beyond the total while the others finish theirs.
- Output (in --output_dir, default runs/search-TASK): search.json, trials.md, search_history.png,
  search_slices.png, best.yaml (`finetune train TASK --config best.yaml` retrains the best trial), and
  trials/trial_NNNN/ run directories. Only the best trial keeps its model, unless --keep_all. Trials are never
  resumed, so they checkpoint without optimizer state and keep no checkpoint once finished (--save_only_model,
  --keep_checkpoints none) unless those flags are given.
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from finetune.commands.study import given_fields
from finetune.core.atomic_io import atomic_write_json, atomic_write_text, disk_errors, write_problem
from finetune.core.config import THROWAWAY_CHECKPOINTS, load_yaml, parse_config
from finetune.core.engine import TrainingInterrupted, on_evaluation
from finetune.core.errors import CommandParser, LossDiverged, UserError, user_errors_exit
from finetune.core.metrics import greater_is_better
from finetune.reporting.report import save_figure
from finetune.reporting.tables import fmt_value, markdown_table, text_table
from finetune.tasks import registry

# Files a finished trial keeps when its model is dropped: enough for finetune compare and the trial table.
KEPT_FILES = {"results.json", "config.yaml", "trial.json", "learning_curves.png"}


# ---- the search space -----------------------------------------------------------------------------------------


def default_space(config) -> dict:
    """Around the recipe's own defaults (its YAML), so every recipe gets a space that suits it."""
    lr = config.learning_rate
    batch = config.batch_size
    space = {
        "learning_rate": {"type": "float", "low": lr / 10, "high": lr * 10, "log": True},
        "warmup_ratio": {"type": "float", "low": 0.0, "high": 0.2},
        "weight_decay": {"type": "float", "low": 0.0, "high": 0.1},
        "batch_size": {"type": "categorical", "choices": sorted({max(1, batch // 2), batch, batch * 2})},
    }
    if config.max_steps is None:  # with --max_steps the number of epochs does not matter
        epochs = max(1, round(config.num_epochs))
        space["num_epochs"] = {"type": "int", "low": max(1, epochs - 1), "high": epochs + 1}
    if config.lora:
        space["lora_r"] = {"type": "categorical", "choices": [4, 8, 16, 32]}
    return space


def load_space(path: Path, config) -> dict:
    """--space FILE: entries replace the defaults; `name: null` drops one; a plain value fixes a field.

    learning_rate: {type: float, low: 1.0e-5, high: 1.0e-3, log: true}
    batch_size: {type: categorical, choices: [16, 32]}
    num_epochs: {type: int, low: 1, high: 3}
    warmup_ratio: 0.1
    """

    space = default_space(config)
    fields = {f.name for f in dataclasses.fields(config)}
    for name, spec in load_yaml(path).items():
        if name not in fields:
            raise UserError(
                f"--space {path}: {name!r} is not a field of the "
                f"{type(config).__name__}: use one of {', '.join(sorted(fields))}"
            )
        if spec is None:
            space.pop(name, None)
        else:
            space[name] = spec
    for name, spec in space.items():
        check_spec(name, spec, path)
    return space


def check_spec(name: str, spec, path) -> None:
    if not isinstance(spec, dict):
        return  # a fixed value
    where = f"--space {path}: {name}" if path else name
    kind = spec.get("type")
    if kind == "categorical":
        if not isinstance(spec.get("choices"), list) or not spec["choices"]:
            raise UserError(f"{where} needs a non-empty list of choices: {{type: categorical, choices: [16, 32]}}")
    elif kind in ("float", "int"):
        try:
            low, high = float(spec["low"]), float(spec["high"])
        except (KeyError, TypeError, ValueError):
            raise UserError(f"{where} needs numeric low and high: {{type: {kind}, low: 1, high: 3}}") from None
        if not low <= high or (spec.get("log") and low <= 0):
            raise UserError(
                f"{where}: need 0 < low <= high for a log range and low <= high otherwise, got {low}, {high}"
            )
    else:
        raise UserError(f"{where} has type {kind!r}: use float, int or categorical (or give a plain value to fix it)")


def suggest(trial, space: dict) -> dict:
    values = {}
    for name, spec in space.items():
        if not isinstance(spec, dict):
            values[name] = spec
        elif spec["type"] == "categorical":
            values[name] = trial.suggest_categorical(name, spec["choices"])
        elif spec["type"] == "int":
            values[name] = trial.suggest_int(name, int(spec["low"]), int(spec["high"]), log=bool(spec.get("log")))
        else:
            values[name] = trial.suggest_float(name, float(spec["low"]), float(spec["high"]), log=bool(spec.get("log")))
    return values


# ---- the study -------------------------------------------------------------------------------------------------


def open_study(storage_url: str, study_name: str, task: str, greater_is_better: bool, seed: int):
    import optuna

    kwargs = {}
    if storage_url.startswith("sqlite:///"):
        db = Path(storage_url[len("sqlite:///") :])
        if str(db) and not db.parent.is_dir():
            db.parent.mkdir(parents=True, exist_ok=True)
        # Several processes on one SQLite file: wait for the write lock instead of failing at once.
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    try:
        storage = _rdb_storage(storage_url, kwargs)
    except ImportError as err:
        raise UserError(
            f"--storage {mask(storage_url)} needs a database driver that is not installed ({err}): "
            f"e.g. pip install psycopg2-binary for PostgreSQL"
        ) from None
    except Exception as err:  # bad URL, unreachable server, unreadable file
        raise UserError(f"cannot open the study storage {mask(storage_url)}: {str(err).splitlines()[0]}") from None
    direction = "maximize" if greater_is_better else "minimize"
    try:
        study = optuna.create_study(
            storage=storage,
            study_name=study_name,
            direction=direction,
            load_if_exists=True,
            sampler=optuna.samplers.TPESampler(seed=seed),
            # Median rule from the second finished trial on, at every evaluation (the first is a baseline).
            pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0),
        )
    except ValueError as err:
        raise UserError(f"study {study_name!r} in {mask(storage_url)}: {err}: pick another --study_name") from None
    trials_so_far = len(study.get_trials(deepcopy=False))
    if trials_so_far:  # re-seeded with `seed` alone, a continued search would replay trial 0, 1, ... as its next trials
        study.sampler = optuna.samplers.TPESampler(seed=continued_seed(seed, trials_so_far))
    if study.direction.name.lower() != direction:
        raise UserError(
            f"study {study_name!r} in {mask(storage_url)} was created to {study.direction.name.lower()} "
            f"but {task} wants to {direction}: pick another --study_name"
        )
    owner = study.user_attrs.get("task")
    if owner is None:
        study.set_user_attr("task", task)
    elif owner != task:
        raise UserError(
            f"study {study_name!r} in {mask(storage_url)} belongs to "
            f"task {owner!r}, not {task!r}: pick another --study_name"
        )
    return study


def continued_seed(seed: int, trials_so_far: int) -> int:
    """The sampler seed of a process that finds `trials_so_far` trials in its study: still determined by the
    command (the same continuation samples the same points) but different from the fresh search's `seed`."""
    return (seed * 1_000_003 + trials_so_far) % 2**32


def check_sqlite_writable(storage_url: str) -> None:
    """A SQLite study file the search cannot write (a read-only file or folder) is one line naming it, before
    anything starts; Optuna would fail at its first commit with "exceeding max length", which misleads."""
    import tempfile

    if not storage_url.startswith("sqlite:///") or storage_url == "sqlite:///:memory:":
        return
    db = Path(storage_url[len("sqlite:///") :])
    folder = db.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if db.exists() and not db.is_file():
        raise UserError(f"--storage {storage_url}: {db} is not a file: name a SQLite file (sqlite:///path/search.db)")
    # opened for writing (nothing written), and a probe beside it: SQLite writes its journal in the same folder
    for what, probe in (
        (f"the study database {db}", lambda: open(db, "r+b").close() if db.is_file() else None),
        (f"the folder {folder}", lambda: tempfile.TemporaryFile(dir=folder).close()),
    ):
        try:
            probe()
        except OSError as err:
            reason = write_problem(err, folder) or err.strerror or type(err).__name__
            raise UserError(
                f"--storage {storage_url}: cannot write {what} ({reason}): a search records every trial "
                f"there; make it writable or choose another --storage / --output_dir"
            ) from None


def _rdb_storage(storage_url: str, kwargs: dict):
    """Optuna's RDBStorage. Two processes that open a new database at once race to create its tables (seen:
    SQLite's "UNIQUE constraint failed: alembic_version"); the loser retries and finds them made."""
    import optuna

    for attempt in range(5):
        try:
            # Heartbeats: a trial whose process died (kill -9, a lost machine) is marked failed, not left running.
            return optuna.storages.RDBStorage(storage_url, heartbeat_interval=30, grace_period=120, **kwargs)
        except ImportError:
            raise
        except Exception as err:
            if attempt == 4 or not any(word in str(err) for word in ("UNIQUE constraint", "already exists", "locked")):
                raise
            time.sleep(1 + attempt)


def mask(url: str) -> str:
    """A storage URL without its password (it goes into search.json and error messages)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def finished(study) -> list:
    from optuna.trial import TrialState

    return [t for t in study.get_trials(deepcopy=False) if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]


# ---- what is optimised ----------------------------------------------------------------------------------------


def objective_metric(recipe, config) -> tuple[str, bool]:
    """The validation metric a trial is scored on, and its direction: the one the recipe selects weights on.

    A recipe whose metric depends on its configuration (text_classification: by problem type) reads it from
    --metric_for_best or its per-problem-type default; the direction is finetune.core.evaluation's one rule.
    """

    metric = getattr(config, "metric_for_best", None) or getattr(recipe, "METRIC_FOR_BEST", None)
    defaults = getattr(recipe, "DEFAULT_METRIC", {})
    if metric is None and getattr(config, "problem_type", "auto") in defaults:
        metric = defaults[config.problem_type]
    if metric is None:
        raise UserError(
            f"finetune search {recipe.TASK}: the metric to optimise depends on the data here: pass "
            f"--metric_for_best NAME (or --problem_type)"
        )
    return metric, greater_is_better(metric)


class SearchTarget:
    """A recipe module as the search sees it: its own names, plus the metric and direction being optimised."""

    def __init__(self, module, metric: str, greater: bool):
        self._module, self.METRIC_FOR_BEST, self.GREATER_IS_BETTER = module, metric, greater

    def __getattr__(self, name):
        return getattr(self._module, name)


# ---- one trial ------------------------------------------------------------------------------------------------


def make_objective(recipe, base_config, space: dict, out_dir: Path):
    import optuna

    metric = recipe.METRIC_FOR_BEST

    def objective(trial):
        values = suggest(trial, space)
        run_dir = out_dir / "trials" / f"trial_{trial.number:04d}"
        trial.set_user_attr("run_dir", str(run_dir))
        # A trial trains the fine-tuned model only (the scratch comparison is not what is being tuned).
        config = dataclasses.replace(
            base_config, **values, output_dir=str(run_dir), overwrite=True, resume=False, compare=False
        )
        evaluations = []

        def report(name, step, metrics):
            evaluations.append(metrics[metric])
            trial.report(metrics[metric], len(evaluations))
            if trial.should_prune():
                trial.set_user_attr(
                    "pruned_at", {"evaluation": len(evaluations), "step": step, metric: metrics[metric]}
                )
                raise optuna.TrialPruned(
                    f"evaluation {len(evaluations)} (step {step}): {metric} {metrics[metric]:.4f} "
                    f"is worse than the median of earlier trials"
                )

        started = time.perf_counter()
        state, value, note = "COMPLETE", None, None
        try:  # (the line below inside: a Ctrl-C right after it still leaves trial.json)
            print(f"trial {trial.number}: starting {format_params(values)}", flush=True)
            with on_evaluation(report):
                results = recipe.run(config)
            history = results["models"][0]["history"]
            scores = [h["eval"][metric] for h in history if "eval" in h and metric in h["eval"]]
            if not scores:
                raise UserError(
                    f"{recipe.TASK} trial {trial.number} ran no validation "
                    "evaluation: the search needs a validation split"
                )
            value = max(scores) if recipe.GREATER_IS_BETTER else min(scores)  # what the engine selected the weights on
            return value
        except LossDiverged as err:
            # A sampled learning rate that blows the loss up is an answer, not a reason to stop the search:
            # the trial fails (Optuna records a NaN objective as failed) and the next one starts.
            state, note = "FAIL", str(err)
            return float("nan")
        except UserError as err:
            state, note = "FAIL", str(err)
            raise
        except optuna.TrialPruned as pruned:
            state, note = "PRUNED", str(pruned)
            raise
        except BaseException as err:  # Ctrl-C, a failed trial: its folder says so, Optuna marks it failed
            state, note = "FAIL", f"{type(err).__name__}: {err}"
            if is_interruption(err):  # trials.md says "interrupted", not a bare "fail"
                trial.set_user_attr("interrupted", True)
            raise
        finally:
            if (
                state != "COMPLETE" and "mlflow" in sys.modules
            ):  # a run the stopped trial left open must not nest the next
                sys.modules["mlflow"].end_run(status="KILLED")
            seconds = round(time.perf_counter() - started, 2)
            # Always, even for a trial stopped before its recipe made the folder: the folder says what happened.
            atomic_write_json(
                run_dir / "trial.json",
                {
                    "number": trial.number,
                    "state": state,
                    metric: value,
                    "params": values,
                    "seconds": seconds,
                    "note": note,
                    "evaluations": evaluations,
                },
            )
            shown = f"{metric} {value:.4f}" if value is not None else note
            print(f"trial {trial.number}: {state} in {seconds:.1f} s: {shown}", flush=True)

    return objective


class SearchTerminated(KeyboardInterrupt):
    """SIGTERM outside a trial's training loop, handled like Ctrl-C (see `terminate_as_interrupt`)."""


def is_interruption(err: BaseException) -> bool:
    return isinstance(err, (KeyboardInterrupt, TrainingInterrupted))


@contextmanager
def terminate_as_interrupt():
    """SIGTERM (a scheduler's stop, `kill`) stops the search as Ctrl-C does, wherever it lands.

    Python's default ends the process at once: exit 143, no message, and the running trial left RUNNING in the
    study, so missing from trials.md. Inside a trial's training the engine's own handler takes over (a checkpoint,
    then TrainingInterrupted) and puts this one back afterwards.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise SearchTerminated(f"received {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class QuietInterruptions:
    """A logging filter for Optuna's "Trial N failed ... because of the following error" (with a traceback) when
    the error is an interruption: the trial's own line and the search's one line already say what happened."""

    def filter(self, record) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and is_interruption(exc):
            self.last = record.getMessage().split(" failed")[0]  # "Trial 4": its "failed with value None" goes too
            return False
        return not (getattr(self, "last", None) and record.getMessage().startswith(f"{self.last} failed with value"))


@contextmanager
def quiet_interruptions():
    import logging

    logger, quiet = logging.getLogger("optuna.study._optimize"), QuietInterruptions()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


def drop_models(study, out_dir: Path, keep_all: bool) -> None:
    """Keep the best trial's model only: other finished trials keep their results, config and trial.json.

    One snapshot of the study decides both "finished" and "best", so a trial another process has just finished
    is never dropped as "not the best" before it is counted; running trials are never touched.
    """
    from optuna.trial import TrialState

    if keep_all:
        return
    trials = study.get_trials(deepcopy=False)
    best = best_of(trials, study.direction.name.lower() == "maximize")
    for t in trials:
        if (
            t.state == TrialState.RUNNING
            or t.state == TrialState.WAITING
            or (best is not None and t.number == best.number)
        ):
            continue
        run_dir = out_dir / "trials" / f"trial_{t.number:04d}"
        if not run_dir.is_dir():
            continue
        for item in run_dir.iterdir():
            if item.name not in KEPT_FILES:
                shutil.rmtree(item, ignore_errors=True) if item.is_dir() else item.unlink(missing_ok=True)


def best_of(trials, maximize: bool):
    from optuna.trial import TrialState

    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        return None
    return (max if maximize else min)(complete, key=lambda t: t.value)


def best_trial(study):
    return best_of(study.get_trials(deepcopy=False), study.direction.name.lower() == "maximize")


# ---- reports --------------------------------------------------------------------------------------------------


def summarise(study, recipe, out_dir: Path, storage_url: str) -> dict:
    from optuna.trial import TrialState

    metric = recipe.METRIC_FOR_BEST
    trials = []
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.RUNNING:
            continue
        seconds = (
            (t.datetime_complete - t.datetime_start).total_seconds()
            if t.datetime_complete and t.datetime_start
            else None
        )
        last = t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None
        trials.append(
            {
                "number": t.number,
                "state": t.state.name,
                "interrupted": bool(t.user_attrs.get("interrupted")),
                metric: t.value,
                "last_evaluation": last,
                "evaluations": len(t.intermediate_values),
                "params": t.params,
                "seconds": round(seconds, 2) if seconds is not None else None,
                "run_dir": t.user_attrs.get("run_dir"),
            }
        )
    best = best_trial(study)
    summary = {
        "task": recipe.TASK,
        "study_name": study.study_name,
        "storage": mask(storage_url),
        "metric": metric,
        "direction": study.direction.name.lower(),
        "trials": trials,
        "best": None
        if best is None
        else {
            "number": best.number,
            metric: best.value,
            "params": best.params,
            "run_dir": best.user_attrs.get("run_dir"),
        },
        "importances": importances(study),
    }
    return summary


def importances(study) -> dict | None:
    """Optuna's parameter importances (PED-ANOVA), once there are enough complete trials to say anything."""
    from optuna.trial import TrialState

    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if len(complete) < 3:
        return None
    import optuna

    try:
        return {k: round(v, 4) for k, v in optuna.importance.get_param_importances(study).items()}
    except (RuntimeError, ValueError):  # e.g. every parameter fixed: nothing varies, nothing to rank
        return None


def format_table(summary: dict, markdown: bool = False) -> str:
    metric = summary["metric"]
    names = list(dict.fromkeys(k for t in summary["trials"] for k in t["params"]))
    best = (summary["best"] or {}).get("number")
    header = ["trial", "state", metric, *names, "seconds"]
    rows = []
    for t in summary["trials"]:
        value = t[metric] if t[metric] is not None else t["last_evaluation"]
        shown = fmt_value(value) + (" (at pruning)" if value is not None and t["state"] == "PRUNED" else "")
        state = "interrupted" if t.get("interrupted") else t["state"].lower()
        rows.append(
            [
                f"{t['number']}" + (" *" if t["number"] == best else ""),
                state,
                shown,
                *(_fmt(t["params"].get(n)) for n in names),
                fmt_value(t["seconds"], 1),
            ]
        )
    if markdown:
        return "\n".join(markdown_table(header, rows))
    return text_table(header, rows, rules=False) + "\n* the best trial"


def _fmt(value) -> str:
    """A parameter's value: 3e-05, 0.1, 16 (tables.fmt_value, trailing zeros dropped)."""
    return fmt_value(value, trim=True)


def format_params(values: dict) -> str:
    return ", ".join(f"{k}={_fmt(v)}" for k, v in values.items())


def plot_history(summary: dict, path: Path) -> Path:
    """The metric of each trial in order (pruned ones at their last evaluation) and the running best."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric, maximize = summary["metric"], summary["direction"] == "maximize"
    fig, ax = plt.subplots(figsize=(7, 4))
    complete = [t for t in summary["trials"] if t["state"] == "COMPLETE"]
    pruned = [t for t in summary["trials"] if t["state"] == "PRUNED" and t["last_evaluation"] is not None]
    ax.plot([t["number"] for t in complete], [t[metric] for t in complete], "o", label="complete")
    ax.plot(
        [t["number"] for t in pruned],
        [t["last_evaluation"] for t in pruned],
        "x",
        color="grey",
        label="pruned (last evaluation)",
    )
    running, best = [], None
    for t in complete:
        best = t[metric] if best is None else (max if maximize else min)(best, t[metric])
        running.append(best)
    ax.step([t["number"] for t in complete], running, where="post", color="C3", label="best so far")
    ax.set(
        title=f"{summary['task']} search: validation {metric} ({'higher' if maximize else 'lower'} is better)",
        xlabel="trial",
        ylabel=metric,
    )
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return save_figure(fig, path)


def plot_slices(summary: dict, path: Path) -> Path:
    """One panel per searched parameter: the metric of each complete trial against the value it tried."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = summary["metric"]
    complete = [t for t in summary["trials"] if t["state"] == "COMPLETE"]
    names = list(dict.fromkeys(k for t in summary["trials"] for k in t["params"])) or ["(none)"]
    importance = summary.get("importances") or {}
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.4), squeeze=False, sharey=True)
    for ax, name in zip(axes[0], names):
        points = [(t["params"][name], t[metric], t["number"]) for t in complete if name in t["params"]]
        numeric = all(isinstance(x, (int, float)) for x, _, _ in points)
        xs = [x if numeric else str(x) for x, _, _ in points]
        ax.scatter(xs, [y for _, y, _ in points], c=[n for _, _, n in points], cmap="viridis")
        if name == "learning_rate" and numeric and points:
            ax.set_xscale("log")
        title = name + (f"\nimportance {importance[name]:.2f}" if name in importance else "")
        ax.set(title=title, xlabel=name)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"validation {metric}")
    fig.suptitle("each complete trial (colour: trial number)")
    fig.tight_layout()
    return save_figure(fig, path)


def write_best_yaml(study, recipe, out_dir: Path) -> Path | None:
    """The best trial's resolved config, retargeted at a fresh run directory: `finetune train TASK --config
    best.yaml`."""
    import yaml

    best = best_trial(study)
    if best is None:
        return None
    trial_config = Path(best.user_attrs["run_dir"]) / "config.yaml"
    config = yaml.safe_load(trial_config.read_text())
    config.update(output_dir=str(out_dir / "best"), overwrite=False, resume=False)
    for name in THROWAWAY_CHECKPOINTS:  # the trials' disk settings, not the retrain's: it gets the recipe's defaults
        config.pop(name, None)
    header = (
        f"# {recipe.TASK}: trial {best.number} of study {study.study_name!r}, validation "
        f"{recipe.METRIC_FOR_BEST} {best.value:.5f}.\n# Retrain it: finetune train {recipe.TASK} --config best.yaml "
        f"(add --compare true for the from-scratch comparison)\n"
    )
    path = out_dir / "best.yaml"
    atomic_write_text(path, header + yaml.safe_dump(config, sort_keys=False))
    return path


def write_reports(study, recipe, out_dir: Path, storage_url: str) -> dict:
    summary = summarise(study, recipe, out_dir, storage_url)
    with disk_errors("search.json", out_dir):
        atomic_write_json(out_dir / "search.json", summary)
        atomic_write_text(out_dir / "trials.md", format_table(summary, markdown=True) + "\n")
    plot_history(summary, out_dir / "search_history.png")
    plot_slices(summary, out_dir / "search_slices.png")
    write_best_yaml(study, recipe, out_dir)
    return summary


# ---- the command ----------------------------------------------------------------------------------------------


def build_parser() -> CommandParser:
    parser = CommandParser(
        prog="finetune search", description=__doc__.split("\n\n")[0], add_help=False, allow_abbrev=False
    )
    parser.add_argument("task")
    parser.add_argument("--n_trials", type=int, default=20, help="finished trials the study should hold (default 20)")
    parser.add_argument("--storage", help="an Optuna storage URL (default sqlite:///OUTPUT_DIR/search.db)")
    parser.add_argument("--study_name", help="default: the task name")
    parser.add_argument("--space", type=Path, help="a YAML search space (see finetune/commands/search.py: load_space)")
    parser.add_argument(
        "--sampler_seed", type=int, help="seeds TPE (default: --seed); give each parallel process its own"
    )
    parser.add_argument("--keep_all", action="store_true", help="keep every trial's model, not only the best one")
    return parser


def main(argv=None) -> int:
    import importlib
    import importlib.util
    import os

    argv = sys.argv[1:] if argv is None else list(argv)
    with user_errors_exit():
        if argv and argv[0] in ("-h", "--help"):
            build_parser().print_help()
            print("\nEvery other flag is a field of the task's config: finetune train TASK --help lists them.")
            return 0
        args, rest = build_parser().parse_known_args(argv)
        registry.get(args.task)  # an unknown task: one line naming the tasks there are
        if args.n_trials < 1:
            raise UserError(f"--n_trials must be at least 1, got {args.n_trials}")
        if importlib.util.find_spec("optuna") is None:
            raise UserError(
                "finetune search needs the 'optuna' package: pip install optuna (or pip install -e '.[search]')"
            )
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise UserError(
                "finetune search runs as one process: to search in parallel, start several "
                "`finetune search` processes on the same --storage instead of accelerate launch"
            )
        module = registry.get(args.task).load()
        base = parse_config(registry.get(args.task).config_cls, rest)
        given = given_fields(rest)  # trials are never resumed: no optimizer state, no checkpoint once finished
        base = dataclasses.replace(base, **{k: v for k, v in THROWAWAY_CHECKPOINTS.items() if k not in given})
        recipe = SearchTarget(module, *objective_metric(module, base))
        if "--output_dir" not in rest:  # not the recipe's default run directory: a search is its own thing
            base = dataclasses.replace(base, output_dir=f"runs/search-{args.task}")
        out_dir = Path(base.output_dir)
        space = load_space(args.space, base) if args.space else default_space(base)
        for name, spec in space.items():
            check_spec(name, spec, args.space)
        storage_url = args.storage or f"sqlite:///{out_dir / 'search.db'}"
        study_name = args.study_name or args.task
        check_sqlite_writable(storage_url)
        out_dir.mkdir(parents=True, exist_ok=True)
        sampler_seed = base.seed if args.sampler_seed is None else args.sampler_seed
        return search(recipe, base, space, out_dir, storage_url, study_name, args.n_trials, args.keep_all, sampler_seed)


def search(
    recipe,
    base,
    space,
    out_dir: Path,
    storage_url: str,
    study_name: str,
    n_trials: int,
    keep_all: bool,
    sampler_seed: int,
) -> int:
    import optuna
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial is printed here instead
    study = open_study(storage_url, study_name, recipe.TASK, recipe.GREATER_IS_BETTER, sampler_seed)
    done = len(finished(study))
    print(
        f"study {study_name!r} in {mask(storage_url)}: {done} of {n_trials} trials finished; "
        f"{'maximize' if recipe.GREATER_IS_BETTER else 'minimize'} validation {recipe.METRIC_FOR_BEST}",
        flush=True,
    )
    objective = make_objective(recipe, base, space, out_dir)
    after_trial = lambda study, trial: (
        drop_models(study, out_dir, keep_all),
        write_reports(study, recipe, out_dir, storage_url),
    )
    code = 0
    if done < n_trials:
        try:
            with terminate_as_interrupt(), quiet_interruptions():
                study.optimize(
                    objective,
                    n_trials=n_trials - done,
                    show_progress_bar=True,
                    gc_after_trial=True,
                    callbacks=[
                        MaxTrialsCallback(n_trials, states=(TrialState.COMPLETE, TrialState.PRUNED)),
                        after_trial,
                    ],
                )
        except (TrainingInterrupted, KeyboardInterrupt):
            print(
                f"search interrupted: {len(finished(study))} of {n_trials} trials finished; run the same command "
                f"again to continue the study",
                file=sys.stderr,
            )
            code = 130
    drop_models(study, out_dir, keep_all)
    summary = write_reports(study, recipe, out_dir, storage_url)
    if code == 0:
        print(format_table(summary))
        best = summary["best"]
        if best is None:
            print("no trial completed: every one was pruned or failed (see search.json)")
        else:
            print(
                f"best: trial {best['number']}, validation {summary['metric']} {best[summary['metric']]:.4f} "
                f"({format_params(best['params'])})"
            )
            print(f"retrain it: finetune train {recipe.TASK} --config {out_dir / 'best.yaml'}")
        print(f"wrote {out_dir}/search.json, trials.md, search_history.png, search_slices.png, best.yaml")
    return code
