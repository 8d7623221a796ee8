"""The training engine: one plain Accelerate loop that knows nothing about tasks.

It takes a model whose forward returns `.loss` given a batch, data loaders, an evaluator (finetune.evaluation)
and a TrainingConfig, and it runs unchanged on a CPU, one GPU, or many processes under `accelerate launch`.

The loop, top to bottom:
    prepare        Accelerator(mixed precision, gradient accumulation, trackers); AdamW; warmup + linear decay
    resume         restore model/optimizer/scheduler/RNG state with load_state and skip the batches already seen
    train          accumulate -> backward -> clip -> step, with a progress bar
    evaluate       every epoch end (and every eval_steps), gather_for_metrics, keep the best weights
    checkpoint     save_state into a temporary folder, then rename: a crash never leaves a half checkpoint
    stop           max steps, early stopping, stop_after_steps, or Ctrl-C / SIGTERM (checkpoint, then exit)
    finish         load the best weights, evaluate on the test split
"""

from __future__ import annotations

import json
import math
import shutil
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from tqdm.auto import tqdm

from finetune.config import TrainingConfig
from finetune.errors import UserError
from finetune.io import atomic_dir, atomic_write_json, commit_dir, disk_errors, new_temp_dir, remove_stale_temp

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
    best_metric: Optional[float] = None
    steps: int = 0
    train_seconds: float = 0.0
    train_samples: int = 0
    real_tokens: int = 0  # non-padding tokens trained on
    padded_tokens: int = 0  # token positions computed, padding included
    stopped_early: bool = False

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

    precision = config.mixed_precision
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    state = process_state()  # the process group (gloo for CPU processes), if the recipe did not set it up already
    if cpu_processes() and state.num_processes == 1:
        raise RuntimeError("launched as several CPU processes, but Accelerate was set up for one (PartialState() "
                           "without cpu=True): the recipe must call finetune.engine.process_state() instead")
    return Accelerator(
        cpu=cpu_processes(),
        mixed_precision=precision,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        log_with=trackers or None,  # finetune.trackers: Accelerate's tracker objects, each given a local store
        project_dir=str(project_dir),
    )


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
    with torch.no_grad():
        for batch in tqdm(loader, desc=desc, leave=False, disable=not accelerator.is_main_process):
            outputs = model(**batch)
            evaluator.add(batch, outputs, accelerator.gather_for_metrics)
    model.train()
    return evaluator.compute()


def train(
    model,
    loaders: dict,
    evaluator,
    config: TrainingConfig,
    run_dir: Path,
    name: str,
    metric_for_best: Optional[str] = None,
    greater_is_better: bool = True,
) -> TrainResult:
    """Train `model` on loaders["train"], select on loaders["validation"], report on loaders["test"].

    Checkpoints live in run_dir/checkpoints/<name>/; if one exists and config.resume is set, training
    continues from the newest one exactly where it stopped (mid-epoch included).
    """
    from transformers import get_linear_schedule_with_warmup

    # ---- prepare ------------------------------------------------------------------------------------------
    checkpoint_root = Path(run_dir) / "checkpoints" / name
    from finetune import trackers

    accelerator = make_accelerator(config, Path(run_dir) / "logs", trackers.build(config.log_with, run_dir, name))
    if config.gradient_checkpointing:
        if not getattr(model, "supports_gradient_checkpointing", False):
            raise UserError(f"{type(model).__name__} does not support gradient checkpointing: drop --gradient_checkpointing")
        model.gradient_checkpointing_enable()
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
    if config.log_with:
        accelerator.init_trackers(Path(run_dir).resolve().name, config=trackers.config_values(config))

    state = {"step": 0, "epoch": 0, "batch_in_epoch": 0, "best_metric": None, "evals_without_improvement": 0,
             "history": [], "train_seconds": 0.0, "train_samples": 0, "real_tokens": 0, "padded_tokens": 0,
             "stopped_early": False, "done": False, "running_loss": 0.0, "running_count": 0}

    # ---- resume -------------------------------------------------------------------------------------------
    if accelerator.is_main_process and checkpoint_root.is_dir():
        remove_stale_temp(checkpoint_root)  # half-written folders of a killed run: never read, now gone
    accelerator.wait_for_everyone()
    latest = latest_checkpoint(checkpoint_root)
    if latest is not None and config.resume:
        accelerator.load_state(str(latest))
        state.update(json.loads((latest / STATE_FILE).read_text()))
        accelerator.print(f"[{name}] resumed from {latest} (step {state['step']}/{total_steps})")

    def kept():
        good = latest_checkpoint(checkpoint_root)
        return f"the last good checkpoint, {good}, is intact" if good else "no checkpoint was written yet"

    def save_checkpoint():
        """save_state into a temporary folder, then one rename: the folder either exists whole or not at all.

        Every process calls save_state (each writes its own RNG state; FSDP and DeepSpeed write shards), all
        into the one folder the main process made; the main process adds the train state and renames it.
        """
        target = checkpoint_root / f"step_{state['step']:08d}"
        accelerator.wait_for_everyone()
        trouble = lambda: disk_errors(f"the checkpoint {target.name}", checkpoint_root, kept())
        with trouble():
            tmp = [str(new_temp_dir(target)) if accelerator.is_main_process else None]
        tmp = Path(_broadcast(tmp)[0])
        try:
            with trouble():  # inside the try: a full disk is diagnosed before the cleanup frees space
                accelerator.save_state(str(tmp), safe_serialization=True)
                accelerator.wait_for_everyone()
                if accelerator.is_main_process:
                    atomic_write_json(tmp / STATE_FILE, state)
                    commit_dir(tmp, target)
                    for old in sorted(checkpoint_root.glob("step_*"))[: -config.keep_checkpoints]:
                        shutil.rmtree(old, ignore_errors=True)
        finally:
            if accelerator.is_main_process and tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        accelerator.wait_for_everyone()
        return target

    def save_best():
        accelerator.wait_for_everyone()
        # get_state_dict is collective under FSDP / DeepSpeed ZeRO-3 (it gathers the shards): every process calls it.
        weights = accelerator.get_state_dict(model)
        if accelerator.is_main_process:
            from safetensors.torch import save_file

            trouble = lambda: disk_errors("the best weights", checkpoint_root, kept())
            with trouble(), atomic_dir(checkpoint_root / "best") as tmp, trouble():  # (inner: before the cleanup)
                weights = {k: v.contiguous() for k, v in weights.items()}
                save_file(_untie(weights), str(tmp / "model.safetensors"))
                atomic_write_json(tmp / "best.json", {"step": state["step"], metric_for_best: state["best_metric"]})
        accelerator.wait_for_everyone()

    # ---- train --------------------------------------------------------------------------------------------
    progress = tqdm(total=total_steps, initial=state["step"], desc=name, disable=not accelerator.is_main_process)
    model.train()
    with progress, stop_signals() as stop_requested:  # (a closed bar: an error message starts its own line)
        while not state["done"] and state["step"] < total_steps:
            # Accelerate's loader re-applies its own epoch counter to the sampler on every pass: set both.
            train_loader.set_epoch(state["epoch"])
            loader = train_loader
            if state["batch_in_epoch"]:  # resuming mid-epoch: same order, minus the batches already trained on
                loader = accelerator.skip_first_batches(train_loader, state["batch_in_epoch"])
            set_epoch(loader, state["epoch"])
            started = time.perf_counter()
            stop = False
            for batch in loader:
                with accelerator.accumulate(model):
                    outputs = model(**batch)
                    loss = outputs.loss
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and config.max_grad_norm > 0:
                        accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                    optimizer.step()
                    optimizer.zero_grad()
                state["batch_in_epoch"] += 1
                # Examples and tokens of this micro-batch, summed over processes: the last round's batches can
                # differ in size between processes, so "local count x processes" would be wrong there.
                mask = batch.get("attention_mask")
                counts = torch.tensor([len(next(iter(batch.values()))), int(mask.sum()) if mask is not None else 0,
                                       mask.numel() if mask is not None else 0], device=accelerator.device)
                if accelerator.num_processes > 1:
                    counts = accelerator.reduce(counts, reduction="sum")
                samples, real, padded = counts.tolist()
                state["train_samples"] += samples
                state["real_tokens"] += real
                state["padded_tokens"] += padded
                loss_value = loss.detach().float()
                if accelerator.num_processes > 1:  # the mean over processes: every process logs, and stops, alike
                    loss_value = accelerator.reduce(loss_value, reduction="mean")
                loss_value = loss_value.item()
                if not math.isfinite(loss_value):
                    kept = latest_checkpoint(checkpoint_root)
                    raise UserError(
                        f"[{name}] the loss became {loss_value} at step {state['step'] + 1}: lower --learning_rate or "
                        f"check the data; last good checkpoint: {kept or 'none yet'}"
                    )
                state["running_loss"] += loss_value  # kept in the state: a resumed run logs the same means
                state["running_count"] += 1
                if not accelerator.sync_gradients:
                    continue

                # ---- one optimizer step done --------------------------------------------------------------
                scheduler.step()
                state["step"] += 1
                progress.update(1)
                step = state["step"]
                epoch_end = state["batch_in_epoch"] >= len(train_loader)
                if step % config.log_steps == 0 or epoch_end or step == total_steps:
                    mean_loss = state["running_loss"] / max(state["running_count"], 1)
                    record = {"step": step, "epoch": round(step / steps_per_epoch, 4), "samples": state["train_samples"],
                              "train_loss": round(mean_loss, 5), "learning_rate": scheduler.get_last_lr()[0]}
                    state["history"].append(record)
                    progress.set_postfix(loss=f"{mean_loss:.4f}")
                    if config.log_with:
                        accelerator.log({"train/loss": mean_loss, "train/learning_rate": record["learning_rate"]}, step=step)
                    state["running_loss"], state["running_count"] = 0.0, 0

                # ---- evaluate ----------------------------------------------------------------------------
                do_eval = eval_loader is not None and (
                    epoch_end or step == total_steps or (config.eval_steps and step % config.eval_steps == 0)
                )
                if do_eval:
                    state["train_seconds"] += time.perf_counter() - started
                    metrics = evaluate(model, eval_loader, evaluator, accelerator, desc=f"{name} validation")
                    started = time.perf_counter()
                    state["history"].append({"step": step, "epoch": round(step / steps_per_epoch, 4),
                                             "samples": state["train_samples"], "eval": metrics})
                    if config.log_with:
                        accelerator.log({f"eval/{k}": v for k, v in metrics.items()}, step=step)
                    if metric_for_best:
                        value = metrics[metric_for_best]
                        best = state["best_metric"]
                        if best is None or (value > best if greater_is_better else value < best):
                            state["best_metric"], state["evals_without_improvement"] = value, 0
                            save_best()
                        else:
                            state["evals_without_improvement"] += 1
                            patience = config.early_stopping_patience
                            if patience and state["evals_without_improvement"] >= patience:
                                state["stopped_early"] = True
                                accelerator.print(f"[{name}] early stop at step {step}: no {metric_for_best} improvement in {patience} evaluations")

                    for callback in list(_EVALUATION_CALLBACKS):  # e.g. finetune.search: report, maybe prune
                        callback(name, step, metrics)

                # ---- checkpoint / stop -------------------------------------------------------------------
                if epoch_end:
                    state["epoch"] += 1
                    state["batch_in_epoch"] = 0
                interrupted = _any_process(accelerator, stop_requested.is_set())  # all stop at the same step
                stop_now = config.stop_after_steps is not None and step >= config.stop_after_steps and step < total_steps
                finished = step >= total_steps or state["stopped_early"]
                if epoch_end or finished or stop_now or interrupted or (config.checkpoint_steps and step % config.checkpoint_steps == 0):
                    state["train_seconds"] += time.perf_counter() - started
                    state["done"] = finished  # an early stop counts as done: --resume won't train further
                    checkpoint = save_checkpoint()
                    started = time.perf_counter()
                    if interrupted or stop_now:
                        progress.close()
                        why = "interrupted" if interrupted else f"stopped after {step} steps (--stop_after_steps)"
                        raise TrainingInterrupted(f"[{name}] {why}; checkpoint saved at {checkpoint}", checkpoint)
                if finished:  # (an epoch end needs no break: it is the loader's last batch)
                    stop = True
                    break
            if stop:
                break
    progress.close()

    # ---- finish: best weights, then the test split ------------------------------------------------------------
    best_dir = checkpoint_root / "best"
    if metric_for_best and (best_dir / "model.safetensors").exists():
        from safetensors.torch import load_file

        accelerator.unwrap_model(model).load_state_dict(load_file(str(best_dir / "model.safetensors")), strict=False)
    test_metrics = evaluate(model, test_loader, evaluator, accelerator, desc=f"{name} test") if test_loader else {}
    if config.log_with:
        accelerator.log({f"test/{k}": v for k, v in test_metrics.items()}, step=state["step"])
        trackers.finish(accelerator)
    return TrainResult(
        model=accelerator.unwrap_model(model), accelerator=accelerator, history=state["history"],
        test_metrics=test_metrics, best_metric=state["best_metric"], steps=state["step"],
        train_seconds=state["train_seconds"], train_samples=state["train_samples"],
        real_tokens=state["real_tokens"], padded_tokens=state["padded_tokens"], stopped_early=state["stopped_early"],
    )


_EVALUATION_CALLBACKS: list = []


@contextmanager
def on_evaluation(callback):
    """callback(name: str, step: int, metrics: dict) runs on every process after each validation evaluation
    (after best-model selection and before the stop decision); an exception it raises propagates out of train()."""
    _EVALUATION_CALLBACKS.append(callback)
    try:
        yield callback
    finally:
        _EVALUATION_CALLBACKS.remove(callback)


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

    def handler(signum, frame):
        if requested.is_set():
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        requested.set()
        if is_rank_zero():  # under a launcher every process gets the signal: say it once
            print(f"\nreceived {signal.Signals(signum).name}: saving a checkpoint at the end of this step...", flush=True)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield requested
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
