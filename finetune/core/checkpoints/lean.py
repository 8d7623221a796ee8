"""Lean run directories: checkpoints keep only what training changes, and the best weights are kept once.

trainable-only checkpoints   a model with frozen weights (LoRA's base, frozen ViT blocks) saves only its
                             trainable ones in each checkpoint and in best/: the frozen ones are the
                             pretrained weights, loaded again with the model (the resume fingerprint,
                             finetune/core/checkpoints/resume.py, checks that it is the same model). Resume stays exact.
one copy of the best         once a run has saved its final model (the best weights), best/ points to it
                             instead of holding the same tensors again (checked tensor by tensor first).
weights-only checkpoints     --save_only_model: the checkpoints written during training hold the weights
                             without optimizer, scheduler or RNG state (as Trainer's save_only_model); the
                             last (a pause, the end of training) stays full, so only a crash leaves a
                             weights-only newest one, and a resume from it is refused in one line.
no checkpoints at all        --keep_checkpoints none, or `finetune clean RUN_DIR` afterwards: a finished
                             run's checkpoints/ goes, and its manifest with it (finetune/core/run_directory.py:
                             remove_checkpoints, above this module: it edits the run's manifest).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from finetune.core.atomic_io import atomic_write_json
from finetune.core.errors import UserError

LEAN_FILE = "trainable_only.json"
WEIGHTS_ONLY_FILE = "weights_only.json"  # the mark of a --save_only_model checkpoint
CHECKPOINTS = "checkpoints"  # a run's checkpoints/<model>/{step_N, best}


def trainable_only(model, weights: dict) -> dict:
    """`weights` without the frozen parameters of `model` (LoRA's base, frozen blocks): those never change, so
    the pretrained model they were loaded from holds them already. Everything, when nothing is frozen."""
    # (remove_duplicate=False: a tied weight, GPT-2's or Llama's output layer, is listed under both its names)
    frozen = {name for name, param in model.named_parameters(remove_duplicate=False) if not param.requires_grad}
    return {k: v for k, v in weights.items() if k not in frozen} if frozen else weights


def keep_only_trainable_weights(accelerator, model) -> None:
    """Checkpoints of a model with frozen weights hold only the trainable ones (a 2-step LoRA run of a 135M model
    kept the whole frozen base in every checkpoint). Resume stays exact: the frozen weights are the pretrained
    ones, loaded again with the model, and the fingerprint (finetune/core/checkpoints/resume.py) checks it is the same
    model."""
    frozen = {name for name, param in model.named_parameters(remove_duplicate=False) if not param.requires_grad}
    if not frozen:
        return

    def drop_frozen(models, weights, output_dir):
        for i, m in enumerate(models):
            if m is model:
                # Tied weights (a BERT decoder's output layer is its word embeddings) are kept once: safetensors
                # refuses two names for one tensor, and loading the one restores the other.
                kept, seen = {}, set()
                for k, v in weights[i].items():
                    if k not in frozen and (v.data_ptr(), v.shape) not in seen:
                        kept[k] = v
                        seen.add((v.data_ptr(), v.shape))
                weights[i] = kept
                if accelerator.is_main_process:
                    atomic_write_json(Path(output_dir) / LEAN_FILE, {"frozen_parameters_left_out": len(frozen)})

    def check_lean(models, input_dir):
        """A lean checkpoint must hold this model's trainable weights and nothing it lacks (load_state then runs
        with strict=False, which would otherwise pass over a mismatch in silence)."""
        from safetensors import safe_open

        for i, m in enumerate(models):
            path = Path(input_dir) / f"model{'_' + str(i) if i else ''}.safetensors"
            if m is not model or not (Path(input_dir) / LEAN_FILE).is_file() or not path.is_file():
                continue
            with safe_open(str(path), framework="pt") as f:
                saved = set(f.keys())
            unexpected = saved - set(m.state_dict())
            stored = {p.data_ptr() for n, p in m.named_parameters() if n in saved}
            missing = [
                n for n, p in m.named_parameters() if p.requires_grad and n not in saved and p.data_ptr() not in stored
            ]
            if unexpected or missing:
                raise UserError(
                    f"the checkpoint {input_dir} does not fit this model ({len(unexpected)} unknown, "
                    f"{len(missing)} missing weights): resume with the model it was trained from, or pass "
                    f"--overwrite to start again"
                )

    accelerator.register_save_state_pre_hook(drop_frozen)
    accelerator.register_load_state_pre_hook(check_lean)


def lean_checkpoint(checkpoint: Path) -> bool:
    return (Path(checkpoint) / LEAN_FILE).is_file()


# ---- one copy of the best weights --------------------------------------------------------------------------------
RELEASED_FILE = "released.json"


def best_weights_file(best_dir: Path) -> Optional[Path]:
    """The best weights: best/model.safetensors, or, once released, the run's saved model it was copied into."""
    best_dir = Path(best_dir)
    if (best_dir / "model.safetensors").is_file():
        return best_dir / "model.safetensors"
    if (best_dir / RELEASED_FILE).is_file():
        model_dir = best_dir.parent.parent.parent / json.loads((best_dir / RELEASED_FILE).read_text())["model_dir"]
        if (model_dir / "model.safetensors").is_file():
            return model_dir / "model.safetensors"
    return None


def release_best_copy(best_dir: Path, model_dir: Path, run_dir: Path) -> bool:
    """Once the run's final model (in `model_dir`) holds exactly the best weights, drop best/'s duplicate copy and
    point to the model instead (a full fine-tune kept the same weights twice). Checked tensor by tensor first:
    a weight the saved model leaves out must be tied to one it holds (GPT-2's output layer is its embedding).
    Returns whether the copy went."""
    import torch  # here, not at the top: the run directory imports this module, and `finetune push` / `compare`
    from safetensors import safe_open  # read run directories without torch

    best_dir, model_dir = Path(best_dir), Path(model_dir)
    best, final = best_dir / "model.safetensors", model_dir / "model.safetensors"
    if not best.is_file() or not final.is_file():
        return False
    with safe_open(str(best), framework="pt") as b, safe_open(str(final), framework="pt") as f:
        final_keys = set(f.keys())
        kept = {}
        for key in b.keys():
            tensor = b.get_tensor(key)
            if key in final_keys:
                if not torch.equal(tensor, f.get_tensor(key)):
                    return False
            else:
                kept[key] = tensor
        # a weight the final model leaves out must equal one it holds (a tied copy), else keep best/ whole
        for key, tensor in kept.items():
            if not any(
                f.get_slice(k).get_shape() == list(tensor.shape) and torch.equal(tensor, f.get_tensor(k))
                for k in final_keys
            ):
                return False
    atomic_write_json(
        best_dir / RELEASED_FILE, {"model_dir": str(model_dir.resolve().relative_to(Path(run_dir).resolve()))}
    )
    best.unlink()
    return True


# ---- weights-only checkpoints (--save_only_model) ----------------------------------------------------------------


def weights_only_checkpoint(checkpoint: Path) -> bool:
    return (Path(checkpoint) / WEIGHTS_ONLY_FILE).is_file()


def refuse_weights_only(accelerator) -> None:
    """A --resume whose newest checkpoint holds the weights only stops in one line. Restarting AdamW from zero
    moments and a fresh RNG would give a run no uninterrupted one gives, and resume here promises exactness (a
    pause and the end of training always save a full checkpoint, so only a crash leaves a weights-only newest one).
    The run is marked running already then, so refusing this late (after the manifest is written) changes nothing."""

    def check(models, input_dir):
        if weights_only_checkpoint(input_dir):
            raise UserError(
                f"cannot resume from {input_dir}: it holds the model weights only (--save_only_model; the "
                f"run stopped without saving a full checkpoint), no optimizer or scheduler state, so training "
                f"cannot continue where it stopped; pass --overwrite (without --resume) to start again"
            )

    accelerator.register_load_state_pre_hook(check)
