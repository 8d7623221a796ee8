"""Run a recipe in this process and interrupt it at an exact point: the child of tests/test_crash_safety.py.

    python tests/crash_child.py POINT N RECIPE [--flag value ...]

POINT says where the N-th occurrence (counted in this process, from 1) ends the run:
    step     SIGKILL right after the N-th optimizer step, before anything about it is saved
    save     SIGKILL inside the N-th checkpoint save: the weights are in the temporary folder, the rest is not
    commit   SIGKILL right after the N-th checkpoint folder is renamed into place (old ones not pruned yet)
    best     SIGKILL inside the N-th save of the best weights
    final    SIGKILL while the final model files are being moved into the run folder (after the first file)
    sigint   send ourselves SIGINT (Ctrl-C) right after the N-th optimizer step
    sigterm  send ourselves SIGTERM right after the N-th optimizer step
    hold     after the first optimizer step, wait until the file named by FINETUNE_TEST_GO exists, then go on
    replaced SIGKILL inside the removal of the run an --overwrite replaced (after its first file went)
    none     run to the end

Killing from the inside makes the points exact; a kill from outside (also tested) can land anywhere.
"""

import importlib
import os
import signal
import sys

point, n, recipe, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
counts = {}


def reached(name: str) -> bool:
    counts[name] = counts.get(name, 0) + 1
    return counts[name] == n


def die():
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


if point in ("step", "sigint", "sigterm"):
    from torch.optim.optimizer import register_optimizer_step_post_hook

    send = {"step": signal.SIGKILL, "sigint": signal.SIGINT, "sigterm": signal.SIGTERM}[point]
    register_optimizer_step_post_hook(lambda *_: reached("step") and os.kill(os.getpid(), send))
elif point == "save":
    import accelerate.checkpointing as checkpointing

    original_save = checkpointing.save

    def save(obj, f, *args, **kwargs):  # accelerate writes model.safetensors first, then optimizer.bin, ...
        original_save(obj, f, *args, **kwargs)
        if str(f).endswith("model.safetensors") and reached("save"):
            die()

    checkpointing.save = save
elif point == "commit":
    import finetune.core.engine as engine

    original_commit = engine.commit_dir

    def commit_dir(tmp, target):
        original_commit(tmp, target)
        if reached("commit"):
            die()

    engine.commit_dir = commit_dir
elif point == "best":
    import safetensors.torch

    original_save_file = safetensors.torch.save_file

    def save_file(tensors, filename, *args, **kwargs):
        original_save_file(tensors, filename, *args, **kwargs)
        if "/.best.tmp." in str(filename) and reached("best"):
            die()

    safetensors.torch.save_file = save_file
elif point == "final":
    import finetune.core.atomic_io as io  # (publish_files, which moves the final files into place)

    original_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        original_replace(src, dst, *args, **kwargs)
        if "/.save." in str(src) and reached("final"):
            die()

    io.os = type(sys)("os_with_a_trap")  # only finetune.core.atomic_io sees the trapped os.replace
    io.os.__dict__.update(os.__dict__)
    io.os.replace = replace
elif point == "hold":
    import time
    from pathlib import Path

    from torch.optim.optimizer import register_optimizer_step_post_hook

    def hold(*_):
        if reached("hold"):
            while not Path(os.environ["FINETUNE_TEST_GO"]).exists():
                time.sleep(0.05)

    register_optimizer_step_post_hook(hold)
elif point == "replaced":
    import shutil
    from pathlib import Path

    import finetune.core.run_directory as io  # (the --overwrite swap)

    original_rmtree = shutil.rmtree

    def rmtree(path, *args, **kwargs):
        if Path(path).name.endswith(".replaced") and Path(path).is_dir() and reached("replaced"):
            next(p for p in sorted(Path(path).rglob("*")) if p.is_file()).unlink()
            die()
        original_rmtree(path, *args, **kwargs)

    io.shutil = type(sys)("shutil_with_a_trap")  # only finetune.core.run_directory sees the trapped rmtree
    io.shutil.__dict__.update(shutil.__dict__)
    io.shutil.rmtree = rmtree
elif point != "none":
    raise SystemExit(f"unknown point {point!r}")

sys.exit(importlib.import_module(f"recipes.{recipe}").main(argv))
