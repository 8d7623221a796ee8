"""`finetune clean RUN_DIR`: remove the checkpoints of a finished run, keep everything else.

    finetune clean RUN_DIR [RUN_DIR ...]            delete each run's checkpoints/ and say what that freed
    finetune clean RUN_DIR [RUN_DIR ...] --dry_run  list what would go, delete nothing

A finished run keeps its newest resumable checkpoints (--keep_checkpoints, default 2 per model: weights,
optimizer and scheduler state), which --resume with a larger --max_steps continues from; they are most of a
run's size (a default sentiment run: about three quarters). The saved model, results.json, the card and the
figures stay, so evaluate / predict / export / compare / push read the run as before; only --resume cannot
continue it any more. The run manifest is updated, so --overwrite still replaces the run later.

A run that has not finished (still training, or stopped with a checkpoint to resume) is refused: its
checkpoints are what --resume needs. `--keep_checkpoints none` does the same as this command at the end of a run.
"""

from __future__ import annotations

from pathlib import Path

from finetune.core.errors import CommandParser, UserError, user_errors_exit
from finetune.core.run_directory import (
    MANIFEST,
    checkpoint_entries,
    folder_bytes,
    human_size,
    read_manifest,
    refuse_unfinished,
    remove_checkpoints,
    run_size,
)


def check_finished(run_dir: Path) -> None:
    """One line unless `run_dir` is a finished run of this toolkit."""
    if not run_dir.is_dir():
        raise UserError(f"{run_dir} is not a folder: pass a run directory (the --output_dir of a finished run)")
    if read_manifest(run_dir) is None:
        raise UserError(f"{run_dir} is not a run directory of this toolkit (it has no {MANIFEST}): nothing removed")
    refuse_unfinished(run_dir, "removing its checkpoints")


def clean(run_dir: Path, dry_run: bool = False) -> None:
    entries = checkpoint_entries(run_dir)
    if not entries:
        print(f"{run_dir}: no checkpoints to remove ({run_size(run_dir)})")
        return
    if dry_run:
        for name, size in entries:
            print(f"  {name}  {human_size(size)}")
        total = sum(size for _, size in entries)
        after = folder_bytes(run_dir) - folder_bytes(run_dir / "checkpoints")
        print(
            f"{run_dir}: would remove {len(entries)} checkpoint folder(s), {human_size(total)}; the run directory "
            f"would go from {run_size(run_dir)} to {human_size(after)} (nothing removed: --dry_run)"
        )
        return
    models = sorted({Path(name).parts[1] for name, _ in entries})
    freed = remove_checkpoints(run_dir)
    print(
        f"{run_dir}: removed checkpoints/ ({len(entries)} checkpoint folder(s) of {', '.join(models)}), "
        f"{human_size(freed)} freed; run directory now {run_size(run_dir)}"
    )


def main(argv=None) -> int:
    parser = CommandParser(prog="finetune clean", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR", help="finished run directories")
    parser.add_argument("--dry_run", action="store_true", help="list what would be removed, remove nothing")
    with user_errors_exit():
        args = parser.parse_args(argv)
        for run_dir in args.run_dirs:  # every one checked before any is touched
            check_finished(run_dir)
        for run_dir in args.run_dirs:
            clean(run_dir, args.dry_run)
    return 0
