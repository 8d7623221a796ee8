"""The training engine: one plain Accelerate loop that knows nothing about tasks.

It takes a model whose forward returns `.loss` given a batch, data loaders, an evaluator (finetune.core.evaluation)
and a TrainingConfig, and it runs unchanged on a CPU, one GPU, or many processes under `accelerate launch`.
What a recipe needs afterwards comes back in the TrainResult (test metrics and the evaluator's test outputs): nothing
is read from the evaluator after train().

The loop, top to bottom (each step is a function below; train() only strings them together):
    prepare            Accelerator(mixed precision, gradient accumulation, trackers); AdamW; warmup + linear decay
    resume_or_start    restore model/optimizer/scheduler/RNG state with load_state, the TrainState from its JSON,
                       and skip the batches already seen (epoch_batches)
    optimisation_step  accumulate -> backward -> clip -> step; example/token counts and the loss over processes
    log_training       the mean training loss every log_steps
    validate           every epoch end (and every eval_steps), gather_for_metrics; select_best keeps the best
                       weights; then the on_evaluation callbacks
    stop_decision      max steps, early stopping, stop_after_steps, or Ctrl-C / SIGTERM, agreed by every process
    checkpoint_or_pause  save_state into a temporary folder, then rename: a crash never leaves a half checkpoint
    finish             load the best weights, evaluate on the test split, keep the evaluator's outputs() of it
"""

from __future__ import annotations

import json
import math
import shutil
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Optional

import torch
from tqdm.auto import tqdm

from finetune.core import trackers
from finetune.core.atomic_io import (
    atomic_dir,
    atomic_write_json,
    commit_dir,
    disk_errors,
    new_temp_dir,
    remove_stale_temp,
)
from finetune.core.checkpoints.lean import (
    WEIGHTS_ONLY_FILE,
    best_weights_file,
    keep_only_trainable_weights,
    lean_checkpoint,
    refuse_weights_only,
    trainable_only,
)
from finetune.core.checkpoints.resume import check_resume, read_fingerprint, save_fingerprint
from finetune.core.checkpoints.safeload import check_checkpoint, check_safetensors
from finetune.core.config import TrainingConfig, checkpoints_kept_while_training
from finetune.core.errors import LossDiverged, UserError
from finetune.core.metrics import greater_is_better
from finetune.core.precision import SHORT_NAMES
from finetune.core.precision import resolve as resolve_precision

STATE_FILE = "train_state.json"


class TrainingInterrupted(Exception):
    """Raised after a Ctrl-C / SIGTERM (or stop_after_steps) once a resumable checkpoint is safely on disk."""

    def __init__(self, message, checkpoint):
        super().__init__(message)
        self.checkpoint = checkpoint


@dataclass
class TrainResult:
    model: torch.nn.Module  # unwrapped, holding the best weights (or the last, without evaluation)
    accelerator: object
    history: list = field(default_factory=list)
    test_metrics: dict = field(default_factory=dict)
    test_outputs: dict = field(default_factory=dict)  # the evaluator's outputs() of the test split ({}: no test split)
    best_metric: Optional[float] = None
    steps: int = 0
    train_seconds: float = 0.0
    train_samples: int = 0
    real_tokens: int = 0  # non-padding tokens trained on
    padded_tokens: int = 0  # token positions computed, padding included
    stopped_early: bool = False
    training_precision: str = "fp32"  # "fp32" | "bf16" | "fp16": the arithmetic of training and validation
    test_precision: str = "fp32"  # the arithmetic of test_metrics (drop_autocast)

    @property
    def samples_per_second(self) -> float:
        return self.train_samples / self.train_seconds if self.train_seconds else 0.0


def cpu_processes() -> bool:
    """True when launched as several processes (accelerate launch, torchrun) on a machine without a GPU."""
    import os

    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()


def process_state():
    """Accelerate's PartialState, right for several CPU processes too: recipes call this, not PartialState().

    Without a GPU, Accelerate sets up a process group only when asked for cpu=True; otherwise each process of
    `accelerate launch --multi_gpu` / `torchrun` would silently train alone on all the data and write the same
    files. The first PartialState of a process fixes this for the whole run (make_accelerator agrees with it).
    """
    from accelerate import PartialState

    return PartialState(cpu=cpu_processes())


def make_accelerator(config: TrainingConfig, project_dir: Path, trackers: Optional[list] = None):
    from accelerate import Accelerator

    state = process_state()  # the process group (gloo for CPU processes), if the recipe did not set it up already
    if cpu_processes() and state.num_processes == 1:
        raise RuntimeError(
            "launched as several CPU processes, but Accelerate was set up for one (PartialState() "
            "without cpu=True): the recipe must call finetune.core.engine.process_state() instead"
        )
    # auto: bf16 where the GPU/CPU does it natively; one line says why
    precision = resolve_precision(config.mixed_precision)
    fresh_training_state()
    return Accelerator(
        cpu=cpu_processes(),
        mixed_precision=precision,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        log_with=trackers or None,  # finetune.core.trackers: Accelerate's tracker objects, each given a local store
        project_dir=str(project_dir),
    )


def fresh_training_state() -> None:
    """Forget the previous training's Accelerate settings, keep the process group.

    Accelerate keeps one AcceleratorState (mixed precision, device, plugins) and one GradientState (accumulation)
    per process, and refuses a second Accelerator with other settings ("AcceleratorState has already been
    initialized"). One process runs many trainings here (pretrained then scratch, a study's cells, search trials,
    a notebook's runs), each with its own --mixed_precision and --gradient_accumulation_steps: each Accelerator
    starts from a clean state. PartialState (the process group, made once by process_state()) is kept.
    """
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()


def make_optimizer(model, config: TrainingConfig):
    """AdamW; biases and normalisation weights get no weight decay (they set scale and offset, not capacity)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 else decay).append(param)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # fused: one C++ kernel per step instead of ~10 tensor ops per parameter tensor issued from Python (torch's
    # default on a CPU). Same AdamW update; on MiniLM (22.7M parameters) the step fell from ~100 ms to ~12 ms of
    # CPU time (bench/README.md). None keeps torch's default where the fused kernel does not apply.
    params = decay + no_decay
    fused = bool(params) and all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.AdamW(groups, lr=config.learning_rate, fused=fused or None)


def evaluate(model, loader, evaluator, accelerator, desc="eval") -> dict:
    model.eval()
    evaluator.reset()
    bookkeeping = getattr(evaluator, "batch_only", ())  # keys for the evaluator only (QA's window_id), not the model
    with torch.no_grad():
        for batch in tqdm(loader, desc=desc, leave=False, disable=not accelerator.is_main_process):
            outputs = model(**{k: v for k, v in batch.items() if k not in bookkeeping})
            evaluator.add(batch, outputs, accelerator.gather_for_metrics)
    model.train()
    return evaluator.compute()


@dataclass
class TrainState:
    """Where training stands: exactly the JSON saved as train_state.json in each checkpoint (same keys, same order).

    Everything a resumed run needs to continue as if never stopped lives here (the running loss too, so a
    resumed run logs the same means); the weights, optimizer, scheduler and RNG states are Accelerate's.
    """

    step: int = 0  # optimizer steps done
    epoch: int = 0
    batch_in_epoch: int = 0  # micro-batches of this epoch already trained on
    best_metric: Optional[float] = None
    evals_without_improvement: int = 0
    history: list = field(default_factory=list)  # training-loss and evaluation records, in order
    train_seconds: float = 0.0  # evaluation and checkpoints not included
    train_samples: int = 0
    real_tokens: int = 0
    padded_tokens: int = 0
    stopped_early: bool = False
    done: bool = False  # finished or stopped early: --resume trains no further
    running_loss: float = 0.0  # sum of micro-batch losses since the last training-loss record
    running_count: int = 0

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> TrainState:
        """Keys a checkpoint lacks keep their defaults (as the old dict.update did)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class Setup:
    """What prepare() builds: the Accelerate-wrapped objects and the fixed facts of one training."""

    name: str
    config: TrainingConfig
    accelerator: object
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    train_loader: object
    eval_loader: object
    test_loader: object
    evaluator: object
    checkpoint_root: Path
    steps_per_epoch: int
    total_steps: int
    metric_for_best: Optional[str]
    greater_is_better: bool
    progress: Optional[tqdm] = None
    start_step: int = 0  # the step this invocation began at (resumed runs: the checkpoint's)
    clock: float = 0.0  # time.perf_counter() when the current stretch of timed training began


@dataclass
class StopDecision:
    finished: bool  # max steps reached or early stop: the run is done
    reason: Optional[str] = None  # why training pauses resumably (Ctrl-C / SIGTERM, --stop_after_steps), else None


# ---- a hook for callers (e.g. hyperparameter search prunes a trial on its validation metrics) ---------------

_evaluation_callbacks: list = []


@contextmanager
def on_evaluation(callback):
    """callback(name: str, step: int, metrics: dict) runs on every process after each validation evaluation
    (after best-model selection and before the stop decision); an exception it raises propagates out of train().

    Under several processes it must decide alike on every process (the metrics are the same everywhere).
    """
    _evaluation_callbacks.append(callback)
    try:
        yield callback
    finally:
        _evaluation_callbacks.remove(callback)


def run_evaluation_callbacks(name: str, step: int, metrics: dict) -> None:
    for callback in list(_evaluation_callbacks):  # (a copy: a callback may leave its context meanwhile)
        callback(name, step, metrics)


# ---- the loop ------------------------------------------------------------------------------------------------


def train(
    model,
    loaders: dict,
    evaluator,
    config: TrainingConfig,
    run_dir: Path,
    name: str,
    metric_for_best: Optional[str] = None,
) -> TrainResult:
    """Train `model` on loaders["train"], select on loaders["validation"], report on loaders["test"].

    Checkpoints live in run_dir/checkpoints/<name>/; if one exists and config.resume is set, training
    continues from the newest one exactly where it stopped (mid-epoch included). Whether a larger
    `metric_for_best` is better is finetune.core.evaluation's one rule.
    """
    setup = prepare(model, loaders, evaluator, config, run_dir, name, metric_for_best)
    state = resume_or_start(setup)
    setup.progress = tqdm(
        total=setup.total_steps, initial=state.step, desc=name, disable=not setup.accelerator.is_main_process
    )
    setup.model.train()
    with setup.progress, stop_signals() as stop_requested:  # (a closed bar: an error message starts its own line)
        while not state.done and state.step < setup.total_steps:
            batches = epoch_batches(setup, state)
            setup.clock = time.perf_counter()
            for batch in batches:
                if not optimisation_step(setup, state, batch):
                    continue  # accumulating gradients: no optimizer step yet
                epoch_end = state.batch_in_epoch >= len(setup.train_loader)
                log_training(setup, state, epoch_end)
                if evaluation_due(setup, state, epoch_end):
                    metrics = validate(setup, state)
                    run_evaluation_callbacks(name, state.step, metrics)
                if epoch_end:
                    state.epoch, state.batch_in_epoch = state.epoch + 1, 0
                stop = stop_decision(setup, state, stop_requested)
                if epoch_end or stop.finished or stop.reason or checkpoint_due(setup, state):
                    checkpoint_or_pause(setup, state, stop)
                if stop.finished:  # the while condition ends too (state.done); an epoch end is the last batch anyway
                    break
        if _any_process(setup.accelerator, stop_requested.is_set()):  # it came during the last step's checkpoint
            latest = latest_checkpoint(setup.checkpoint_root)
            raise TrainingInterrupted(f"[{name}] interrupted after its last step; checkpoint saved at {latest}", latest)
    setup.progress.close()
    return finish(setup, state)


def prepare(model, loaders, evaluator, config, run_dir, name, metric_for_best) -> Setup:
    """Accelerator (mixed precision, gradient accumulation, trackers); AdamW; warmup + linear decay."""
    from transformers import get_linear_schedule_with_warmup

    accelerator = make_accelerator(config, Path(run_dir) / "logs", trackers.build(config.log_with, run_dir, name))
    if config.gradient_checkpointing:
        if not getattr(model, "supports_gradient_checkpointing", False):
            raise UserError(
                f"{type(model).__name__} does not support gradient checkpointing: drop --gradient_checkpointing"
            )
        model.gradient_checkpointing_enable()
    if config.torch_compile:
        model.compile()  # in place: same module, same state_dict keys, so checkpoints and saved models are unchanged
    optimizer = make_optimizer(model, config)
    model, optimizer = accelerator.prepare(model, optimizer)
    train_loader = accelerator.prepare(loaders["train"])
    eval_loader = accelerator.prepare(loaders["validation"]) if "validation" in loaders else None
    test_loader = accelerator.prepare(loaders["test"]) if "test" in loaders else None

    steps_per_epoch = math.ceil(len(train_loader) / config.gradient_accumulation_steps)
    total_steps = config.max_steps or math.ceil(config.num_epochs * steps_per_epoch)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * total_steps), total_steps)
    # Stepped by hand once per optimizer step (not prepared, which would step it once per process), but
    # registered so save_state / load_state carry it.
    accelerator.register_for_checkpointing(scheduler)
    keep_only_trainable_weights(accelerator, model)
    refuse_weights_only(accelerator)  # --resume from a --save_only_model checkpoint: one line, not a missing file
    if config.log_with:
        # One experiment per run directory, one tracker run per model (pretrained, scratch) in it.
        accelerator.init_trackers(Path(run_dir).resolve().name, config=trackers.config_values(config))
    return Setup(
        name=name,
        config=config,
        accelerator=accelerator,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        train_loader=train_loader,
        eval_loader=eval_loader,
        test_loader=test_loader,
        evaluator=evaluator,
        checkpoint_root=Path(run_dir) / "checkpoints" / name,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        metric_for_best=metric_for_best,
        greater_is_better=greater_is_better(metric_for_best) if metric_for_best else True,
    )


def resume_or_start(setup: Setup) -> TrainState:
    """A fresh state, or (with config.resume) the newest checkpoint's: model/optimizer/scheduler/RNG and the state."""
    accelerator = setup.accelerator
    if accelerator.is_main_process and setup.checkpoint_root.is_dir():
        remove_stale_temp(setup.checkpoint_root)  # half-written folders of a killed run: never read, now gone
    accelerator.wait_for_everyone()
    latest = latest_checkpoint(setup.checkpoint_root)
    if latest is None or not setup.config.resume:
        return TrainState()
    check_checkpoint(latest)  # run directories travel: nothing in one may run code when loaded, and damage is named
    state = TrainState.from_json(json.loads((latest / STATE_FILE).read_text()))
    check_resume(setup.config, read_fingerprint(latest), str(latest), state.step, accelerator.num_processes)
    accelerator.load_state(str(latest), strict=not lean_checkpoint(latest))
    if state.done and not state.stopped_early and state.step < setup.total_steps:
        state.done = False  # finished at the old --max_steps; a larger one continues it
    setup.start_step = state.step
    accelerator.print(f"[{setup.name}] resumed from {latest} (step {state.step}/{setup.total_steps})")
    return state


def epoch_batches(setup: Setup, state: TrainState):
    """This epoch's loader; resuming mid-epoch: the same order, minus the batches already trained on."""
    # Accelerate's loader re-applies its own epoch counter to the sampler on every pass: set both.
    setup.train_loader.set_epoch(state.epoch)
    loader = setup.train_loader
    if state.batch_in_epoch:
        loader = setup.accelerator.skip_first_batches(setup.train_loader, state.batch_in_epoch)
    set_epoch(loader, state.epoch)
    return loader


def optimisation_step(setup: Setup, state: TrainState, batch) -> bool:
    """One micro-batch: forward, backward, clip and step (Accelerate skips the step while accumulating).

    Returns True when an optimizer step is done (the scheduler stepped, state.step counted).
    """
    accelerator, model, optimizer = setup.accelerator, setup.model, setup.optimizer
    with accelerator.accumulate(model):
        loss = model(**batch).loss
        accelerator.backward(loss)
        if accelerator.sync_gradients and setup.config.max_grad_norm > 0:
            accelerator.clip_grad_norm_(model.parameters(), setup.config.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad()
    state.batch_in_epoch += 1
    count_examples(setup, state, batch)
    # in the state: a resumed run logs the same means
    state.running_loss += mean_loss_over_processes(setup, state, loss)
    state.running_count += 1
    if not accelerator.sync_gradients:
        return False
    setup.scheduler.step()
    state.step += 1
    setup.progress.update(1)
    return True


def count_examples(setup: Setup, state: TrainState, batch) -> None:
    """Add this micro-batch's examples and tokens, summed over processes.

    The last round's batches can differ in size between processes, so "local count x processes" would be wrong there.
    """
    accelerator = setup.accelerator
    mask = batch.get("attention_mask")
    counts = torch.tensor(
        [
            len(next(iter(batch.values()))),
            int(mask.sum()) if mask is not None else 0,
            mask.numel() if mask is not None else 0,
        ],
        device=accelerator.device,
    )
    if accelerator.num_processes > 1:
        counts = accelerator.reduce(counts, reduction="sum")
    samples, real, padded = counts.tolist()
    state.train_samples += samples
    state.real_tokens += real
    state.padded_tokens += padded


def mean_loss_over_processes(setup: Setup, state: TrainState, loss) -> float:
    """The micro-batch loss as a float, the mean over processes (every process logs, and stops, alike); NaN/inf stop."""
    value = loss.detach().float()
    if setup.accelerator.num_processes > 1:
        value = setup.accelerator.reduce(value, reduction="mean")
    value = value.item()
    if not math.isfinite(value):
        last_good = latest_checkpoint(setup.checkpoint_root)
        raise LossDiverged(
            f"[{setup.name}] the loss became {value} at step {state.step + 1}: lower --learning_rate or "
            f"check the data; last good checkpoint: {last_good or 'none yet'}"
        )
    return value


def log_training(setup: Setup, state: TrainState, epoch_end: bool) -> None:
    """Every log_steps, at each epoch end and at the last step: the mean training loss since the last record."""
    step, config = state.step, setup.config
    if not (step % config.log_steps == 0 or epoch_end or step == setup.total_steps):
        return
    mean_loss = state.running_loss / max(state.running_count, 1)
    record = {
        "step": step,
        "epoch": round(step / setup.steps_per_epoch, 4),
        "samples": state.train_samples,
        "train_loss": round(mean_loss, 5),
        "learning_rate": setup.scheduler.get_last_lr()[0],
    }
    state.history.append(record)
    setup.progress.set_postfix(loss=f"{mean_loss:.4f}")
    if config.log_with:
        setup.accelerator.log({"train/loss": mean_loss, "train/learning_rate": record["learning_rate"]}, step=step)
    state.running_loss, state.running_count = 0.0, 0


def evaluation_due(setup: Setup, state: TrainState, epoch_end: bool) -> bool:
    step, eval_steps = state.step, setup.config.eval_steps
    return setup.eval_loader is not None and (
        epoch_end or step == setup.total_steps or bool(eval_steps and step % eval_steps == 0)
    )


@contextmanager
def untimed(setup: Setup, state: TrainState):
    """Evaluation and checkpoint saves do not count as training time (samples per second measures training)."""
    state.train_seconds += time.perf_counter() - setup.clock
    yield
    setup.clock = time.perf_counter()


def validate(setup: Setup, state: TrainState) -> dict:
    """Evaluate on the validation split, record it, and keep the best weights (or count towards early stopping)."""
    with untimed(setup, state):
        metrics = evaluate(
            setup.model, setup.eval_loader, setup.evaluator, setup.accelerator, desc=f"{setup.name} validation"
        )
    state.history.append(
        {
            "step": state.step,
            "epoch": round(state.step / setup.steps_per_epoch, 4),
            "samples": state.train_samples,
            "eval": metrics,
        }
    )
    if setup.config.log_with:
        setup.accelerator.log({f"eval/{k}": v for k, v in metrics.items()}, step=state.step)
    if setup.metric_for_best:
        select_best(setup, state, metrics[setup.metric_for_best])
    return metrics


def select_best(setup: Setup, state: TrainState, value: float) -> None:
    best = state.best_metric
    if best is None or (value > best if setup.greater_is_better else value < best):
        state.best_metric, state.evals_without_improvement = value, 0
        save_best(setup, state)
        return
    state.evals_without_improvement += 1
    patience = setup.config.early_stopping_patience
    if patience and state.evals_without_improvement >= patience:
        state.stopped_early = True
        setup.accelerator.print(
            f"[{setup.name}] early stop at step {state.step}: "
            f"no {setup.metric_for_best} improvement in {patience} evaluations"
        )


def save_best(setup: Setup, state: TrainState) -> None:
    """The best weights so far, into checkpoint_root/best (atomically), with best.json naming step and metric."""
    accelerator, root = setup.accelerator, setup.checkpoint_root
    accelerator.wait_for_everyone()
    # get_state_dict is collective under FSDP / DeepSpeed ZeRO-3 (it gathers the shards): every process calls it.
    weights = accelerator.get_state_dict(setup.model)
    if accelerator.is_main_process:
        from safetensors.torch import save_file

        weights = trainable_only(accelerator.unwrap_model(setup.model), weights)

        trouble = lambda: disk_errors("the best weights", root, last_good_note(root))
        with trouble(), atomic_dir(root / "best") as tmp, trouble():  # (inner: before the cleanup)
            weights = {k: v.contiguous() for k, v in weights.items()}
            save_file(_untie(weights), str(tmp / "model.safetensors"))
            atomic_write_json(tmp / "best.json", {"step": state.step, setup.metric_for_best: state.best_metric})
    accelerator.wait_for_everyone()


def stop_decision(setup: Setup, state: TrainState, stop_requested) -> StopDecision:
    """Agreed by every process at the same step: finished, paused (signal or --stop_after_steps), or go on."""
    interrupted = _any_process(setup.accelerator, stop_requested.is_set())  # collective: every process, every step
    step, stop_after = state.step, setup.config.stop_after_steps
    finished = step >= setup.total_steps or state.stopped_early
    if interrupted:
        return StopDecision(finished, "interrupted")
    if stop_after is not None and setup.start_step < stop_after <= step < setup.total_steps:
        return StopDecision(finished, f"stopped after {step} steps (--stop_after_steps)")
    return StopDecision(finished)


def checkpoint_due(setup: Setup, state: TrainState) -> bool:
    every = setup.config.checkpoint_steps
    return bool(every and state.step % every == 0)


def checkpoint_or_pause(setup: Setup, state: TrainState, stop: StopDecision) -> None:
    """Save a checkpoint; when training pauses, raise TrainingInterrupted once it is on disk."""
    with untimed(setup, state):
        state.done = stop.finished  # an early stop counts as done: --resume won't train further
        # A pause and a model's last step are always full: --resume continues the one, and the other is where a
        # run killed while writing its outputs (or trained further with a larger --max_steps) resumes from.
        checkpoint = save_checkpoint(setup, state, full=bool(stop.reason) or stop.finished)
    if stop.reason:
        setup.progress.close()
        raise TrainingInterrupted(f"[{setup.name}] {stop.reason}; checkpoint saved at {checkpoint}", checkpoint)


def save_checkpoint(setup: Setup, state: TrainState, full: bool = False) -> Path:
    """save_state into a temporary folder, then one rename: the folder either exists whole or not at all.

    Every process calls save_state (each writes its own RNG state; FSDP and DeepSpeed write shards), all
    into the one folder the main process made; the main process adds the train state and renames it.
    With --save_only_model (and not `full`) only the weights go in (save_weights_only).
    Then the oldest are removed, down to --keep_checkpoints.
    """
    weights_only = setup.config.save_only_model and not full
    accelerator, root = setup.accelerator, setup.checkpoint_root
    target = root / f"step_{state.step:08d}"
    accelerator.wait_for_everyone()
    trouble = lambda: disk_errors(f"the checkpoint {target.name}", root, last_good_note(root))
    with trouble():
        tmp = [str(new_temp_dir(target)) if accelerator.is_main_process else None]
    tmp = Path(_broadcast(tmp)[0])
    try:
        with trouble():  # inside the try: a full disk is diagnosed before the cleanup frees space
            if weights_only:
                save_weights_only(setup, tmp)
            else:
                accelerator.save_state(str(tmp), safe_serialization=True)
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                atomic_write_json(tmp / STATE_FILE, state.to_json())
                save_fingerprint(tmp, setup.config, accelerator.num_processes)
                commit_dir(tmp, target)
                keep = checkpoints_kept_while_training(setup.config)  # (None: all)
                for old in sorted(root.glob("step_*"))[: -keep if keep else 0]:
                    shutil.rmtree(old, ignore_errors=True)
    finally:
        if accelerator.is_main_process and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    return target


def save_weights_only(setup: Setup, folder: Path) -> None:
    """A --save_only_model checkpoint: the weights (trainable ones, as in every checkpoint) and a mark saying so;
    no optimizer, scheduler or RNG state, so about a third of a full AdamW checkpoint."""
    accelerator = setup.accelerator
    weights = accelerator.get_state_dict(setup.model)  # collective under FSDP / ZeRO-3: every process calls it
    if accelerator.is_main_process:
        from safetensors.torch import save_file

        weights = trainable_only(accelerator.unwrap_model(setup.model), weights)
        save_file(_untie({k: v.contiguous() for k, v in weights.items()}), str(folder / "model.safetensors"))
        atomic_write_json(folder / WEIGHTS_ONLY_FILE, {"saved": "model weights only (--save_only_model)"})


def last_good_note(checkpoint_root: Path) -> str:
    """For a disk error message: what the user still has."""
    good = latest_checkpoint(checkpoint_root)
    return f"the last good checkpoint, {good}, is intact" if good else "no checkpoint was written yet"


def finish(setup: Setup, state: TrainState) -> TrainResult:
    """Load the best weights (if selection ran), evaluate on the test split, end the trackers."""
    accelerator, model = setup.accelerator, setup.model
    best_weights = best_weights_file(setup.checkpoint_root / "best")
    if setup.metric_for_best and best_weights is not None:
        from safetensors.torch import load_file

        check_safetensors(
            best_weights, "train again with --overwrite (the checkpoints hold no other copy of the best weights)"
        )
        accelerator.unwrap_model(model).load_state_dict(load_file(str(best_weights)), strict=False)
    training_precision = SHORT_NAMES[accelerator.mixed_precision]
    test_precision = drop_autocast(accelerator, model)
    test_metrics, test_outputs = {}, {}
    if setup.test_loader:
        test_metrics = evaluate(model, setup.test_loader, setup.evaluator, accelerator, desc=f"{setup.name} test")
        test_outputs = setup.evaluator.outputs()  # now: the evaluator is reused (the scratch model, extra splits)
    if setup.config.log_with:
        accelerator.log({f"test/{k}": v for k, v in test_metrics.items()}, step=state.step)

        trackers.finish(accelerator)  # not end_training(): that also destroys the process group the next model needs
    return TrainResult(
        model=accelerator.unwrap_model(model),
        accelerator=accelerator,
        history=state.history,
        test_metrics=test_metrics,
        test_outputs=test_outputs,
        best_metric=state.best_metric,
        steps=state.step,
        train_seconds=state.train_seconds,
        train_samples=state.train_samples,
        real_tokens=state.real_tokens,
        padded_tokens=state.padded_tokens,
        stopped_early=state.stopped_early,
        training_precision=training_precision,
        test_precision=test_precision,
    )


def drop_autocast(accelerator, model) -> str:
    """Take Accelerate's autocast off the model's forward; returns the precision the model now computes in.

    Mixed precision speeds up training and validation only. The test metrics are computed in fp32, the precision
    of the saved weights, of pipeline() and of the ONNX export, so `finetune evaluate` repeats them on any machine
    (bf16 autocast gave 0.9023 where fp32 gives 0.9019 on the same test split). FSDP and DeepSpeed hold the
    weights sharded in their own precision: there the test runs as training did, and results.json says so.
    """
    from accelerate.utils import DistributedType

    if accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        return SHORT_NAMES[accelerator.mixed_precision]
    accelerator.unwrap_model(model, keep_fp32_wrapper=False)  # restores the plain forward (in place)
    return "fp32"


def latest_checkpoint(root: Path) -> Optional[Path]:
    """Newest complete checkpoint. Folders appear by atomic rename, so any step_* folder is whole."""
    candidates = sorted(p for p in Path(root).glob("step_*") if (p / STATE_FILE).exists())
    return candidates[-1] if candidates else None


def _broadcast(objects: list) -> list:
    """The main process's values of a list of picklable objects, on every process."""
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list(objects, from_process=0)


def _any_process(accelerator, flag: bool) -> bool:
    """True on every process if it is True on any (a signal may reach the processes at different steps)."""
    if accelerator.num_processes == 1:
        return flag
    return bool(accelerator.reduce(torch.tensor([float(flag)], device=accelerator.device), reduction="sum").item())


def set_epoch(loader, epoch: int) -> None:
    """Tell the batch sampler (possibly wrapped by Accelerate's sharding) which epoch's order to produce."""
    sampler = getattr(loader, "batch_sampler", None)
    while sampler is not None:
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        sampler = getattr(sampler, "batch_sampler", None)


def _untie(weights: dict) -> dict:
    """safetensors refuses tensors that share memory (tied embeddings): store each once as its own copy."""
    seen = {}
    out = {}
    for key, tensor in weights.items():
        ptr = (tensor.data_ptr(), tensor.shape)
        out[key] = tensor.clone() if ptr in seen else tensor
        seen[ptr] = key
    return out


def is_rank_zero() -> bool:
    """The main process of a launch (plain env check: works before and after Accelerate is set up)."""
    import os

    return os.environ.get("RANK", "0") == "0"


@contextmanager
def stop_signals():
    """Ctrl-C / SIGTERM set a flag; the loop checkpoints at the next optimizer step and stops cleanly.

    A second Ctrl-C falls through to Python's default (KeyboardInterrupt) for users who really mean it.
    """
    requested = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield requested
        return
    received = []

    def handler(signum, frame):
        if requested.is_set():
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        requested.set()
        received.append(signum)
        if is_rank_zero():  # under a launcher every process gets the signal: say it once
            print(
                f"\nreceived {signal.Signals(signum).name}: saving a checkpoint at the end of this step...", flush=True
            )

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield requested
    except (TrainingInterrupted, KeyboardInterrupt):
        received.clear()  # answered: by a pause, or a second Ctrl-C already on its way up
        raise
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        if received:
            # It came while another exception was on its way out (a search trial pruned at that evaluation), or
            # after train()'s last look: never drop a stop request, pass it on to whoever handled signals before us.
            signal.raise_signal(received[0])
