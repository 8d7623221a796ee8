"""What every recipe shares, so that a recipe file keeps only its own fields, `build_*` functions and `run()`.

    HubFields        the four --push_to_hub fields and their check, a mixin of each recipe's config dataclass
                     (defined in finetune/core/config.py beside TrainingConfig, whose field flags it shares)
    holds_run_dir    the decorator of every recipe's run(): the run directory's lock, held for the whole run
    main             the command line / `python -m recipes.TASK` entry point: parse, run, exit 0 / 2 / 130
    start_run        before anything loads: one process state, quiet `datasets`, the output directory checked
    open_run_dir     once data and model loaded: the run directory (re)made, config.yaml saved, notes printed
    results_header   the facts results.json states once, where they are known (what the model card reads)
    scratch_config   the from-scratch model's config: the task's preset resized, with one rule for the heads
    limit_samples    --max_train_samples / --max_eval_samples on labelled splits
    finish_run       results.json, learning curves, model card, the run directory finished (an --overwrite
                     swapped in), its checkpoints removed (--keep_checkpoints none), the table and its size,
                     and the push when asked

It lives in the library (not in recipes/) because study / search / compare drive recipes through the same
run() and finish: the package `recipes/` then holds tasks only, as `finetune train` lists them.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Optional

from finetune.core import engine
from finetune.core.config import HubFields as HubFields  # (recipes mix it in as kit.HubFields)
from finetune.core.config import parse_config, resume_advice, save_config
from finetune.core.engine import TrainingInterrupted, is_rank_zero
from finetune.core.errors import user_errors_exit
from finetune.core.metrics import greater_is_better
from finetune.core.run_directory import (
    check_run_dir,
    finish_run_dir,
    human_size,
    prepare_run_dir,
    remove_checkpoints,
    run_attempt,
    run_lock,
    run_size,
)
from finetune.reporting import card, report
from finetune.reporting.hub import push_run
from finetune.tasks import registry

EXIT_INTERRUPTED = 130  # the shell's code for Ctrl-C: a checkpoint is on disk, --resume continues


def holds_run_dir(run):
    """Decorate a recipe's `run(config)`: it holds the lock of config.output_dir from start to end (see
    finetune/core/run_directory.py), so a second command on the same folder stops with one line instead of
    replacing this run's live folder. Whatever ends the run (an error included) releases it: one process may run
    many recipes."""

    @functools.wraps(run)
    def locked(config, *args, **kwargs):
        with run_lock(config.output_dir, _command(run, kwargs.get("task"))):
            return run(config, *args, **kwargs)

    return locked


def _command(run, task: Optional[str] = None) -> str:
    """What the lock file says this run is: `finetune train TASK`, or the recipe module's own COMMAND (a recipe
    that a verb of its own runs, e.g. `finetune pretrain`)."""
    module = sys.modules.get(run.__module__)
    if task is None and getattr(module, "COMMAND", None):
        return module.COMMAND
    return f"finetune train {task or getattr(module, 'TASK', run.__module__)}"


def main(config_cls, run, argv: Optional[list[str]] = None) -> int:
    """Parse `config_cls` (its defaults, the task's YAML among them < --config FILE < flags), then `run(config)`.

    Exit codes: 0 done; 2 a UserError (one line, printed by user_errors_exit); 130 interrupted with a
    checkpoint saved, and the hint to resume printed once (by rank zero) however many processes ran.
    """

    with user_errors_exit():
        config = parse_config(config_cls, sys.argv[1:] if argv is None else argv)
        # The lock outside: a failed attempt's folder is removed (run_attempt) before another command may start.
        with run_lock(config.output_dir, _command(run)), run_attempt():
            try:
                run(config)
            except TrainingInterrupted as stop:
                if is_rank_zero():
                    print(f"{stop}\n{resume_advice(config)}", file=sys.stderr)
                return EXIT_INTERRUPTED
    return 0


def start_run(config):
    """Before anything loads: the process state, quiet `datasets` maps, and the output directory checked
    (fail fast, touch nothing). Returns Accelerate's PartialState."""
    import datasets

    state = engine.process_state()  # not PartialState(): several CPU processes need cpu=True (see engine)
    datasets.disable_progress_bars()  # map/cast over a few thousand rows takes well under a second
    check_run_dir(config.output_dir, config.overwrite, config.resume, config)  # (and a --resume's fingerprint)
    return state


def open_run_dir(config, state, notes: list[str]) -> Path:
    """Once data and model have loaded: (re)make the run directory, save config.yaml, print the notes.

    With --overwrite of a finished run, the folder returned is its sibling NAME.unfinished: the new run is built
    there and finish_run swaps it in, so a failure never costs the earlier run anything
    (finetune/core/run_directory.py)."""

    run_dir = prepare_run_dir(config.output_dir, config.overwrite, config.resume, config)
    if state.is_main_process:
        save_config(config, run_dir / "config.yaml")
    for note in notes:
        state.print(f"- {note}")
    return run_dir


def results_header(task: str, config, source, provenance, metric_for_best: str) -> dict:
    """The start of results.json: what ran, on what, and the facts the model card states rather than guesses.

    pipeline_tag: the registered task's (finetune/tasks/registry.py).

    dataset_kind / dataset_source: where the loader took the data from (its finetune.data.provenance.Provenance),
    with dataset_is_hub for the card's dataset link; base_model: the pretrained model's
    Hub id, or None for an offline alias or a local folder, which base_model_origin names without any path.
    """

    return {
        "task": task,
        "pipeline_tag": registry.get(task).pipeline_tag,
        "dataset": config.dataset,
        "dataset_source": provenance.note,
        "dataset_kind": provenance.kind,
        "dataset_is_hub": provenance.kind == "hub",
        "base_model": source.hub_id,
        "base_model_origin": source.origin,
        "metric_for_best": metric_for_best,
        "greater_is_better": greater_is_better(metric_for_best),
    }


def scratch_config(task: str, d_model: int, n_layers: int, **fields):
    """The from-scratch model's ScratchTransformerConfig: finetune.models.scratch's preset for `task` (a pipeline tag),
    resized to `d_model` x `n_layers`, then `fields` (vocabulary, labels, image size, ...).

    One rule for every recipe: attention heads keep the preset's head width (64 for text, 32 for images), the
    feed-forward layer is 4 x d_model as in the paper, dropout 0.1.
    """
    # here: it imports transformers' modelling code (~2 s), needed only when a scratch model is built
    from finetune.models.scratch.models import scratch_config_for

    preset = scratch_config_for(task)
    head_width = preset.d_model // preset.n_heads
    sizes = dict(
        d_model=d_model, n_heads=max(1, d_model // head_width), n_layers=n_layers, d_ff=4 * d_model, dropout=0.1
    )
    return scratch_config_for(task, **{**sizes, **fields})


def limit_samples(data, config):
    """--max_train_samples (the first N of the seeded shuffle) and --max_eval_samples (the first N of validation);
    the test split is always whole."""
    if config.max_train_samples:
        train = data.splits["train"].shuffle(seed=config.seed)
        data.splits["train"] = train.select(range(min(config.max_train_samples, len(train))))
    if config.max_eval_samples:
        validation = data.splits["validation"]
        data.splits["validation"] = validation.select(range(min(config.max_eval_samples, len(validation))))
    return data


def finish_run(
    run_dir: Path, config, results: dict, where: str, table: Optional[str] = None, log_scale: bool = False
) -> None:
    """The end of every recipe, on the main process: results.json, learning_curves.png, the model card (README.md),
    the table (`table`, else report.format_table) and `where` (what to look at next), then the push when --push_to_hub.

    Nothing here is optional or silent: a card that cannot be written is an error like any other.
    """

    if not engine.process_state().is_main_process:
        return
    report.write_results(run_dir, results)
    report.plot_learning_curves(run_dir, results, metric=results["metric_for_best"], log_scale=log_scale)
    card.write_model_card(run_dir)
    final = finish_run_dir(run_dir)  # finished: only now may it replace an earlier run (--overwrite)
    where = where.replace(str(run_dir), str(final))  # (an --overwrite was built in NAME.unfinished)
    run_dir = final
    print(table if table is not None else report.format_table(results))
    if getattr(config, "keep_checkpoints", None) == "none":  # only now: until the run finished, they were its resume
        print(f"removed the checkpoints (--keep_checkpoints none): {human_size(remove_checkpoints(run_dir))} freed")
    print(f"run directory: {run_dir} ({run_size(run_dir)})  {where}")
    if config.push_to_hub:
        url = push_run(run_dir, config.hub_repo_id, private=config.hub_private, endpoint=config.hub_endpoint)
        print(f"pushed to {url}")
