"""Which arithmetic training runs in: what `--mixed_precision auto` chooses, and why.

Mixed precision here is autocast only: matmuls run in bf16 (or fp16), while weights, gradients, optimizer state
and checkpoints stay fp32. So a resumed run continues bit-exactly and a saved model is the same fp32 file either way.

    auto on a GPU   bf16 where the GPU has it, else fp32 (fp16 needs loss scaling: ask for it with fp16)
    auto on a CPU   bf16 only where the CPU does bf16 natively: x86 with AVX-512 BF16 or AMX, ARM with the BF16
                    extension. Elsewhere (AVX2, say) bf16 is emulated and several times slower than fp32, so fp32.
                    Where the CPU says it has bf16 (or says nothing, e.g. no /proc/cpuinfo), a short matmul probe
                    confirms it is really faster; its result is cached per CPU model + flags + torch version.
    no / bf16 / fp16   forced (fp16 needs a GPU; bf16 works on any CPU, just slowly where it is emulated)

One line says what was chosen and why, e.g.
    mixed precision: fp32 (auto: CPU has no native bf16 (no avx512_bf16/amx_bf16 flag; torch CPU capability AVX2))
"""

from __future__ import annotations

import hashlib
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from finetune.core.atomic_io import atomic_write_json
from finetune.core.environment import cache_dir
from finetune.core.errors import UserError

# x86: AVX-512 BF16 (Cooper Lake, Sapphire Rapids, Zen 4+) or AMX tiles (Sapphire Rapids+); ARM: the BF16 extension.
X86_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "amx_tile")
ARM_BF16_FLAGS = ("bf16",)
# Native bf16 matmul measured 4x fp32 on an AVX-512 BF16 EPYC, emulated bf16 7x slower on AVX2: any threshold in
# between separates the two; this one leaves room for a noisy, shared machine.
PROBE_MIN_SPEEDUP = 1.3
PROBE_CACHE_FILE = "precision_probe.json"
NAMES = {"no": "fp32", "bf16": "bf16 autocast", "fp16": "fp16 autocast"}
# Accelerate's names -> what results.json records (training_precision, test_precision)
SHORT_NAMES = {"no": "fp32", "bf16": "bf16", "fp16": "fp16", "fp8": "fp8"}


@dataclass(frozen=True)
class Choice:
    precision: str  # what Accelerate gets: "no" | "bf16" | "fp16"
    reason: str

    @property
    def line(self) -> str:
        return f"mixed precision: {NAMES[self.precision]} ({self.reason})"


# ---- what the CPU says about itself ---------------------------------------------------------------------------


def cpu_model() -> str:
    for line in _cpuinfo().splitlines():
        if line.split(":")[0].strip() in ("model name", "Model", "Hardware"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def cpu_flags() -> Optional[set[str]]:
    """The CPU's feature flags (x86 "flags", ARM "Features"), or None where the OS does not list them."""
    for line in _cpuinfo().splitlines():
        if line.split(":")[0].strip() in ("flags", "Features"):
            return set(line.split(":", 1)[1].split())
    return None


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def torch_cpu_capability() -> str:
    import torch

    try:
        return torch.backends.cpu.get_cpu_capability()
    except Exception:  # older torch: the capability is only part of the reason text
        return "unknown"


def machine_facts() -> dict:
    """The machine a measurement ran on, as benchmarks and studies record it beside their numbers."""
    import os

    import torch

    return {
        "processor": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_cpu_capability": torch_cpu_capability(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def native_cpu_bf16(flags: Optional[set[str]] = None) -> tuple[Optional[bool], str]:
    """(True / False / None if unknown, why) from the CPU's flags."""
    flags = cpu_flags() if flags is None else flags
    capability = torch_cpu_capability()
    if flags is None:
        return None, f"the OS lists no CPU flags; torch CPU capability {capability}"
    arm = platform.machine().lower() in ("aarch64", "arm64")
    wanted = ARM_BF16_FLAGS if arm else X86_BF16_FLAGS
    found = sorted(flags & set(wanted))
    if found:
        return True, f"CPU flags {', '.join(found)}"
    return False, f"CPU has no native bf16 (no {'/'.join(wanted[:2])} flag; torch CPU capability {capability})"


# ---- what the CPU does: a measured probe, cached --------------------------------------------------------------


def matmul_flops(dtype_name: str = "float32", size: int = 1024, reps: int = 3) -> tuple[float, float]:
    """FLOP/s of the fastest of `reps` square CPU matmuls in `dtype_name`, after one untimed warmup.

    Returns (per wall second, per CPU second of this process). The benchmark uses it for its peak as well.
    """
    import torch

    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    out = torch.empty(size, size, dtype=dtype)
    torch.mm(a, b, out=out)
    best = best_cpu = float("inf")
    for _ in range(reps):
        started, cpu_started = time.perf_counter(), time.process_time()
        torch.mm(a, b, out=out)
        best = min(best, time.perf_counter() - started)
        best_cpu = min(best_cpu, time.process_time() - cpu_started)
    return 2 * size**3 / best, 2 * size**3 / max(best_cpu, 1e-9)


def probe_key() -> str:
    import torch

    flags = " ".join(sorted(cpu_flags() or ()))
    return f"{cpu_model()} | flags {hashlib.sha1(flags.encode()).hexdigest()[:12]} | torch {torch.__version__}"


def probe_cpu_bf16(use_cache: bool = True) -> dict:
    """bf16 vs fp32 matmul speed on this CPU: {"fp32_gflops", "bf16_gflops", "speedup", "cached"}.

    Measured once per CPU model + flags + torch version, then read back from <cache>/precision_probe.json.
    """
    import json

    path, key = cache_dir() / PROBE_CACHE_FILE, probe_key()
    cached = {}
    if use_cache and path.is_file():
        try:
            cached = json.loads(path.read_text())
        except (OSError, ValueError):
            cached = {}  # a damaged cache is only a cache: measure again
        if isinstance(cached, dict) and isinstance(cached.get(key), dict):
            return {**cached[key], "cached": True}
    # 512^3: milliseconds where bf16 is native, about a second where it is emulated (0.7 GFLOP/s on Zen 3 AVX2).
    fp32, _ = matmul_flops("float32", size=512, reps=2)
    bf16, _ = matmul_flops("bfloat16", size=512, reps=2)
    result = {
        "fp32_gflops": round(fp32 / 1e9, 1),
        "bf16_gflops": round(bf16 / 1e9, 1),
        "speedup": round(bf16 / fp32, 2),
    }
    if use_cache:
        try:
            atomic_write_json(path, {**(cached if isinstance(cached, dict) else {}), key: result})
        except OSError:
            pass  # an unwritable cache costs a re-measure next time, nothing else
    return {**result, "cached": False}


# ---- the choice -----------------------------------------------------------------------------------------------


CHOICES = ("auto", "no", "bf16", "fp16")


def check_requested(requested: str, device: Optional[str] = None) -> None:
    """The one rule for `--mixed_precision`: a known name, and a forced one the device can run (fp16 needs a GPU;
    bf16 a GPU that has it, or any CPU). The config checks it when it is built, choose() when training starts."""
    if requested not in CHOICES:
        raise UserError(f"--mixed_precision must be one of {', '.join(CHOICES)}; got {requested!r}")
    if requested in ("auto", "no"):
        return
    import torch

    device = device or _device()
    if requested == "fp16" and device == "cpu":
        raise UserError(
            "--mixed_precision fp16 needs a GPU, and none is visible (CPU autocast does bf16): "
            "use --mixed_precision bf16 or no"
        )
    if requested == "bf16" and device == "cuda" and not torch.cuda.is_bf16_supported():
        raise UserError(
            f"--mixed_precision bf16: this GPU ({torch.cuda.get_device_name()}) has no bf16: "
            f"use --mixed_precision fp16 or no"
        )


def choose(requested: str = "auto", device: Optional[str] = None) -> Choice:
    """The precision for `--mixed_precision requested` on `device` ("cuda" | "mps" | "cpu"; default: what's here)."""
    import torch

    device = device or _device()
    check_requested(requested, device)
    if requested != "auto":
        reason = "forced by --mixed_precision"
        if requested == "bf16" and device == "cpu":
            native, why = native_cpu_bf16()
            if native is False:
                reason += f"; {why}: bf16 is emulated here, expect it slower than fp32"
        return Choice(requested, reason)

    if device == "cuda":
        if torch.cuda.is_bf16_supported():
            return Choice("bf16", f"auto: {torch.cuda.get_device_name()} supports bf16")
        return Choice("no", f"auto: {torch.cuda.get_device_name()} has no bf16; --mixed_precision fp16 forces fp16")
    if device != "cpu":
        return Choice("no", f"auto: fp32 on {device}")

    native, why = native_cpu_bf16()
    if native is False:
        return Choice("no", f"auto: {why}")
    probe = probe_cpu_bf16()
    measured = (
        f"bf16 matmul {probe['bf16_gflops']:.0f} vs fp32 {probe['fp32_gflops']:.0f} GFLOP/s"
        f"{', cached probe' if probe['cached'] else ''}"
    )
    if probe["speedup"] >= PROBE_MIN_SPEEDUP:
        return Choice("bf16", f"auto: {why}; {measured}")
    return Choice("no", f"auto: {why}, but {measured} (under {PROBE_MIN_SPEEDUP}x)")


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "mps" if _mps() else "cpu"


def _mps() -> bool:
    import torch

    return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()


def resolve(requested: str) -> str:
    """choose() once per launch: the main process decides (and probes) and prints one line, every process agrees.

    Call it after the process group exists (finetune.core.engine.process_state()).
    """
    from accelerate import PartialState

    state = PartialState()
    # Forced choices are checked on every process (a bad one fails everywhere, nobody waits); auto probes once.
    choice = choose(requested) if state.is_main_process or requested != "auto" else None
    if state.num_processes > 1 and requested == "auto":
        from accelerate.utils import broadcast_object_list

        choice = broadcast_object_list([choice], from_process=0)[0]
    if state.is_main_process:
        print(choice.line, flush=True)
    return choice.precision
