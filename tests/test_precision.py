"""--mixed_precision: what `auto` chooses from the hardware (capability check and probe mocked both ways), forced
choices, the probe's per-machine cache, and bf16 training: autocast only, fp32 weights, bit-exact resume."""

import json
from types import SimpleNamespace

import pytest
import torch

from finetune.core import engine, precision
from finetune.core.config import TrainingConfig
from finetune.core.errors import UserError

AVX2_FLAGS = {"fpu", "sse4_2", "avx", "avx2", "fma"}
BF16_FLAGS = AVX2_FLAGS | {"avx512f", "avx512bw", "avx512_bf16"}


@pytest.fixture
def cpu(monkeypatch):
    """A pretend CPU: set .flags (None: the OS lists none), .machine and .probe_speedup; .probes counts probes."""
    fake = SimpleNamespace(flags=AVX2_FLAGS, machine="x86_64", probe_speedup=4.0, probes=0)

    def probe(use_cache=True):
        fake.probes += 1
        return {
            "fp32_gflops": 200.0,
            "bf16_gflops": 200.0 * fake.probe_speedup,
            "speedup": fake.probe_speedup,
            "cached": False,
        }

    monkeypatch.setattr(precision, "cpu_flags", lambda: fake.flags)
    monkeypatch.setattr(precision.platform, "machine", lambda: fake.machine)
    monkeypatch.setattr(precision, "probe_cpu_bf16", probe)
    return fake


# ---- the choice ---------------------------------------------------------------------------------------------


def test_auto_on_an_avx2_cpu_is_fp32_without_probing(cpu):
    choice = precision.choose("auto", device="cpu")
    assert choice.precision == "no"
    assert cpu.probes == 0  # emulated bf16 is ~40x slower here: not worth even a second of probing
    assert "no native bf16" in choice.reason and "avx512_bf16" in choice.reason
    assert choice.line.startswith("mixed precision: fp32 (auto: ") and "\n" not in choice.line


@pytest.mark.parametrize("flags", [BF16_FLAGS, AVX2_FLAGS | {"amx_tile", "amx_bf16"}])
def test_auto_on_a_native_bf16_cpu_is_bf16_when_the_probe_agrees(cpu, flags):
    cpu.flags = flags
    choice = precision.choose("auto", device="cpu")
    assert choice.precision == "bf16" and cpu.probes == 1
    assert "bf16 matmul 800 vs fp32 200 GFLOP/s" in choice.reason


def test_auto_trusts_the_probe_over_the_flags(cpu):
    cpu.flags, cpu.probe_speedup = BF16_FLAGS, 0.9  # says bf16, but measured slower (a VM hiding it, say)
    choice = precision.choose("auto", device="cpu")
    assert choice.precision == "no" and "under 1.3x" in choice.reason


@pytest.mark.parametrize("speedup, expected", [(3.0, "bf16"), (0.1, "no")])
def test_without_cpu_flags_the_probe_decides(cpu, speedup, expected):
    cpu.flags, cpu.probe_speedup = None, speedup
    assert precision.choose("auto", device="cpu").precision == expected
    assert cpu.probes == 1


@pytest.mark.parametrize("features, expected", [({"fp", "asimd", "bf16", "sve"}, "bf16"), ({"fp", "asimd"}, "no")])
def test_arm_reads_the_bf16_feature(cpu, features, expected):
    cpu.machine, cpu.flags = "aarch64", features
    assert precision.choose("auto", device="cpu").precision == expected


def test_forced_choices_ignore_the_hardware(cpu):
    assert precision.choose("no", device="cpu").precision == "no"
    cpu.flags = BF16_FLAGS
    assert precision.choose("no", device="cpu").reason == "forced by --mixed_precision"
    cpu.flags = AVX2_FLAGS
    forced = precision.choose("bf16", device="cpu")
    assert forced.precision == "bf16" and "expect it slower" in forced.reason
    assert cpu.probes == 0
    with pytest.raises(UserError, match="fp16 needs a GPU"):
        precision.choose("fp16", device="cpu")
    with pytest.raises(UserError, match="must be one of"):
        precision.choose("fp8", device="cpu")


@pytest.mark.parametrize("requested", ["fp8", "FP16", "fp16"])
def test_the_config_and_the_choice_refuse_in_the_same_words(requested, monkeypatch):
    """One --mixed_precision rule: building the config and choosing at training time refuse alike (they used to
    say "needs a CUDA GPU" and "needs a GPU (CPU autocast does bf16)")."""
    monkeypatch.setattr(precision, "_device", lambda: "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError) as from_config:
        TrainingConfig(mixed_precision=requested)
    with pytest.raises(UserError) as from_choice:
        precision.choose(requested)
    assert str(from_config.value) == str(from_choice.value)
    assert str(from_config.value).startswith("--mixed_precision")


def test_a_forced_bf16_on_a_gpu_without_it_is_refused_when_the_config_is_built(monkeypatch):
    monkeypatch.setattr(precision, "_device", lambda: "cuda")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Pretend GPU")
    with pytest.raises(UserError, match=r"bf16: this GPU \(Pretend GPU\) has no bf16"):
        TrainingConfig(mixed_precision="bf16")
    assert TrainingConfig(mixed_precision="fp16").mixed_precision == "fp16"


@pytest.mark.parametrize("bf16_gpu, expected", [(True, "bf16"), (False, "no")])
def test_auto_on_a_gpu(cpu, monkeypatch, bf16_gpu, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16_gpu)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Pretend GPU")
    choice = precision.choose("auto", device="cuda")
    assert choice.precision == expected and "Pretend GPU" in choice.reason and cpu.probes == 0
    if not bf16_gpu:
        with pytest.raises(UserError, match="has no bf16"):
            precision.choose("bf16", device="cuda")


def test_the_real_check_on_this_machine_agrees_with_proc_cpuinfo():
    """Independent truth: /proc/cpuinfo read here, not through the module."""
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        pytest.skip("no /proc/cpuinfo")
    flags = set(next(l for l in text.splitlines() if l.startswith(("flags", "Features"))).split(":", 1)[1].split())
    native, _ = precision.native_cpu_bf16()
    import platform

    expected = bool(
        flags & ({"bf16"} if platform.machine() in ("aarch64", "arm64") else {"avx512_bf16", "amx_bf16", "amx_tile"})
    )
    assert native is expected


# ---- the probe and its cache --------------------------------------------------------------------------------


def test_probe_is_measured_once_per_machine_then_read_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FINETUNE_CACHE", str(tmp_path))
    calls = []

    def fake_matmul(dtype_name, size=1024, reps=3):
        calls.append(dtype_name)
        return ({"float32": 200e9, "bfloat16": 900e9}[dtype_name], 1.0)

    monkeypatch.setattr(precision, "matmul_flops", fake_matmul)
    first = precision.probe_cpu_bf16()
    assert first == {"fp32_gflops": 200.0, "bf16_gflops": 900.0, "speedup": 4.5, "cached": False}
    assert sorted(calls) == ["bfloat16", "float32"]
    second = precision.probe_cpu_bf16()
    assert second == {**first, "cached": True} and len(calls) == 2
    stored = json.loads((tmp_path / precision.PROBE_CACHE_FILE).read_text())
    assert list(stored) == [precision.probe_key()] and torch.__version__ in precision.probe_key()

    # Another torch (or CPU) is another key: measured again, both kept.
    monkeypatch.setattr(torch, "__version__", "9.9.9")
    assert precision.probe_cpu_bf16()["cached"] is False and len(calls) == 4
    assert len(json.loads((tmp_path / precision.PROBE_CACHE_FILE).read_text())) == 2

    # A damaged cache is measured again and rewritten, never an error.
    (tmp_path / precision.PROBE_CACHE_FILE).write_text("{not json")
    assert precision.probe_cpu_bf16()["cached"] is False


def test_matmul_flops_measures_a_real_matmul():
    wall, cpu_time = precision.matmul_flops("float32", size=64, reps=2)
    assert wall > 0 and cpu_time > 0


# ---- training in bf16 ---------------------------------------------------------------------------------------


class TinyNet(torch.nn.Module):
    """Two linear layers; records the dtype its first layer computed in (bf16 under autocast)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.hidden = torch.nn.Linear(8, 16)
        self.out = torch.nn.Linear(16, 2)
        self.compute_dtypes = set()

    def forward(self, x, labels):
        h = self.hidden(x)
        self.compute_dtypes.add(h.dtype)
        logits = self.out(torch.relu(h))
        return SimpleNamespace(loss=torch.nn.functional.cross_entropy(logits.float(), labels), logits=logits)


def tiny_loaders():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(48, 8, generator=g)
    y = (x[:, 0] > 0).long()
    rows = [{"x": x[i], "labels": y[i]} for i in range(48)]
    collate = lambda batch: {k: torch.stack([r[k] for r in batch]) for k in batch[0]}  # noqa: E731
    return {
        "train": torch.utils.data.DataLoader(
            rows, batch_size=4, shuffle=True, collate_fn=collate, generator=torch.Generator().manual_seed(2)
        )
    }


def train_tiny(tmp_path, precision_flag, **overrides):
    model = TinyNet()
    config = TrainingConfig(
        output_dir=str(tmp_path),
        num_epochs=2,
        learning_rate=0.05,
        warmup_ratio=0.0,
        mixed_precision=precision_flag,
        log_steps=1,
        **overrides,
    )
    return model, engine.train(model, tiny_loaders(), None, config, tmp_path, "tiny")


def test_engine_prints_its_choice_and_trains_fp32_on_this_cpu(tmp_path, cpu, capsys):
    model, result = train_tiny(tmp_path, "auto")
    assert "mixed precision: fp32 (auto: CPU has no native bf16" in capsys.readouterr().out
    assert result.accelerator.mixed_precision == "no" and model.compute_dtypes == {torch.float32}


def test_engine_auto_on_a_native_bf16_cpu_autocasts(tmp_path, cpu, capsys):
    cpu.flags = BF16_FLAGS
    model, result = train_tiny(tmp_path, "auto")
    assert "mixed precision: bf16 autocast (auto: CPU flags avx512_bf16" in capsys.readouterr().out
    assert result.accelerator.mixed_precision == "bf16" and model.compute_dtypes == {torch.bfloat16}
    # Autocast only: the weights (and so the saved model) stay fp32.
    assert {p.dtype for p in result.model.parameters()} == {torch.float32}
    # The test split was scored in fp32, and the model handed back computes in fp32 (no autocast left on it).
    assert result.training_precision == "bf16" and result.test_precision == "fp32"
    model.compute_dtypes.clear()
    with torch.no_grad():
        result.model(torch.randn(2, 8), torch.tensor([0, 1]))
    assert model.compute_dtypes == {torch.float32}


def test_bf16_resume_is_bit_exact_and_checkpoints_stay_fp32(tmp_path):
    from safetensors.torch import load_file

    _, whole = train_tiny(tmp_path / "whole", "bf16")
    with pytest.raises(engine.TrainingInterrupted) as stopped:
        train_tiny(tmp_path / "split", "bf16", stop_after_steps=5)  # mid-epoch: 12 steps an epoch
    checkpoint = stopped.value.checkpoint
    saved = load_file(str(checkpoint / "model.safetensors"))
    assert {t.dtype for t in saved.values()} == {torch.float32}
    optimizer = torch.load(checkpoint / "optimizer.bin", weights_only=True)
    assert {t.dtype for s in optimizer["state"].values() for t in s.values() if t.ndim} == {torch.float32}

    model, resumed = train_tiny(tmp_path / "split", "bf16", resume=True)
    assert model.compute_dtypes == {torch.bfloat16} and resumed.steps == whole.steps == 24
    for (name, a), (_, b) in zip(whole.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), name
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in whole.history]

    # bf16 really changed the arithmetic: an fp32 run ends elsewhere (the comparison above is not vacuous).
    # (In the same process, straight after the bf16 runs: each training gets its own Accelerate state.)
    _, fp32 = train_tiny(tmp_path / "fp32", "no")
    assert not torch.equal(fp32.model.hidden.weight, whole.model.hidden.weight)
