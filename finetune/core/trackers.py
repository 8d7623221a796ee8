"""Experiment trackers: `--log_with tensorboard|mlflow|trackio|wandb`, or several joined by commas.

They are Accelerate's own tracker classes, given places to write so that everything works offline:

    tensorboard   RUN_DIR/logs/<model>/               event files (tensorboard --logdir RUN_DIR/logs)
    mlflow        RUN_DIR/mlflow.db, RUN_DIR/mlartifacts   a local SQLite tracking store (mlflow ui --backend-store-uri
                                                     sqlite:///RUN_DIR/mlflow.db); MLFLOW_TRACKING_URI, if set, wins
    trackio       trackio's local store (~/.cache/huggingface/trackio, or TRACKIO_DIR)  (trackio show)
    wandb         RUN_DIR/wandb/ in offline mode unless WANDB_MODE says otherwise
                  (wandb sync RUN_DIR/wandb/offline-run-*)

One run directory is one experiment (named after the folder); each model trained in it (pretrained, scratch) is
one run of that experiment, named after the model. Each logs the configuration, train/loss and
train/learning_rate, eval/<metric> after every validation and test/<metric> at the end.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from finetune.core.errors import UserError
from finetune.core.secrets import is_secret_name

# tracker -> (module that must import, pip package that provides it)
PACKAGES = {
    "tensorboard": ("tensorboard", "tensorboard"),
    "mlflow": ("mlflow", "mlflow"),
    "trackio": ("trackio", "trackio"),
    "wandb": ("wandb", "wandb"),
}


def names(log_with: str | None) -> list[str]:
    """The trackers asked for, checked: a name we do not know, or a package not installed, is a one-line error."""
    if not log_with:
        return []
    chosen = list(dict.fromkeys(n.strip().lower() for n in str(log_with).split(",") if n.strip()))
    for name in chosen:
        if name not in PACKAGES:
            raise UserError(
                f"--log_with {name!r} is not a tracker this toolkit sets up: use one or more of "
                f"{', '.join(PACKAGES)}, joined by commas"
            )
        module, package = PACKAGES[name]
        if importlib.util.find_spec(module) is None:
            raise UserError(f"--log_with {name} needs the {package!r} package: pip install {package}")
    return chosen


def build(log_with: str | None, run_dir: Path, model_name: str) -> list:
    """Accelerate tracker objects for `Accelerator(log_with=...)`; init_trackers then starts them."""
    run_dir = Path(run_dir).resolve()
    experiment = run_dir.name
    trackers = []
    for name in names(log_with):
        if name == "tensorboard":
            from accelerate.tracking import TensorBoardTracker

            trackers.append(TensorBoardTracker(model_name, run_dir / "logs"))
        elif name == "mlflow":
            trackers.append(_mlflow_tracker(experiment, model_name, run_dir))
        elif name == "trackio":
            from accelerate.tracking import TrackioTracker

            trackers.append(TrackioTracker(experiment, name=model_name))
        elif name == "wandb":
            from accelerate.tracking import WandBTracker

            (run_dir / "wandb").mkdir(parents=True, exist_ok=True)
            trackers.append(
                WandBTracker(
                    experiment,
                    name=model_name,
                    dir=str(run_dir),
                    mode=os.environ.get("WANDB_MODE", "offline"),
                    reinit="create_new",
                )
            )
    return trackers


def _mlflow_tracker(experiment: str, model_name: str, run_dir: Path):
    from accelerate.tracking import MLflowTracker

    class LocalMLflowTracker(MLflowTracker):
        """MLflow's tracker, pointed at a SQLite store in the run directory unless MLFLOW_TRACKING_URI is set.

        (MLflow 3 refuses its old ./mlruns file store by default; SQLite is its recommended local backend.)
        """

        def start(self):
            import mlflow

            if not os.environ.get("MLFLOW_TRACKING_URI"):
                mlflow.set_tracking_uri(f"sqlite:///{run_dir / 'mlflow.db'}")
            super().start()

        def finish(self):
            import mlflow

            super().finish()
            mlflow.end_run()  # idempotent; the next model's run must not nest inside this one

    return LocalMLflowTracker(
        experiment_name=experiment, logging_dir=(run_dir / "mlartifacts").as_uri(), run_name=model_name
    )


def config_values(config) -> dict:
    """What the trackers record as the run's parameters: every plain value of the config (lists as text), except a
    field named like a secret (finetune/core/secrets.py): a tracker may sync to a server."""
    values = {}
    for key, value in vars(config).items():
        if is_secret_name(key):
            continue
        if isinstance(value, (int, float, str, bool)):
            values[key] = value
        elif isinstance(value, (list, tuple)):
            values[key] = ",".join(map(str, value))
    return values


def finish(accelerator) -> None:
    """End this model's tracker runs. Not accelerator.end_training(): that also tears down the process group,
    which the next model of the run (the scratch comparison) still needs under accelerate launch."""
    for tracker in accelerator.trackers:
        tracker.finish()
    accelerator.trackers = []
