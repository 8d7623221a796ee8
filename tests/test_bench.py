"""The benchmark's plumbing in a tiny mode (tiny BERT, two batches, one round): format and sanity, never speed."""

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_engine.py"
LAST_LINE = re.compile(
    r"^speedup_vs_trainer=(\d+\.\d\d) speedup_vs_trainer_grouped=(\d+\.\d\d) "
    r"speedup_vs_trainer_bf16_grouped=(\d+\.\d\d) peak_fraction=(\d+\.\d\d)$"
)
CONTENDERS = ("engine", "trainer", "trainer_grouped", "trainer_bf16_grouped")


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_engine", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_engine"] = module
    spec.loader.exec_module(module)
    return module


def test_tiny_bench_prints_the_last_line_and_writes_json_and_png(tmp_path, tiny_bert_dir, tweets_small_csv, capsys):
    bench = load_bench()
    out = tmp_path / "results"
    code = bench.main(
        [
            "--model",
            str(tiny_bert_dir),
            "--dataset",
            str(tweets_small_csv),
            "--train_samples",
            "64",
            "--rounds",
            "1",
            "--peak_size",
            "256",
            "--peak_reps",
            "2",
            "--output_dir",
            str(out),
        ]
    )
    assert code == 0
    lines = capsys.readouterr().out.strip().splitlines()
    match = LAST_LINE.match(lines[-1])
    assert match, lines[-1]
    # The speedups are ratios of like to like; a 2-layer, 32-wide model's share of the peak rounds to 0.00 on a fast
    # or busy CPU, so the peak fraction is checked unrounded in the JSON below.
    assert all(float(x) > 0 for x in match.groups()[:3])

    report = json.loads((out / "bench_engine.json").read_text())
    assert report["last_line"] == lines[-1]
    assert (out / "bench_engine.png").stat().st_size > 0
    (round_,) = report["rounds"]
    for name in CONTENDERS:
        measured = round_[name]
        # Every contender trained on the same 64 examples, in two batches of 32, one optimizer step each.
        assert measured["samples"] == 64 and measured["steps"] == 2
        assert 0 < measured["real_tokens"] <= measured["padded_tokens"]
        assert measured["samples_per_second"] > 0 and measured["useful_flops_per_second"] > 0
    # Same examples: the real tokens trained on agree across contenders.
    assert len({round_[n]["real_tokens"] for n in CONTENDERS}) == 1
    # The engine trained in what auto chose here; Trainer bf16 in bf16; the peak is the engine's precision's.
    from finetune.core.precision import choose

    assert round_["engine"]["precision"] == report["engine_precision"] == choose("auto", device="cpu").precision
    assert round_["trainer_bf16_grouped"]["precision"] == "bf16" and round_["trainer"]["precision"] == "no"
    assert report["peak_dtype"] == {"no": "float32", "bf16": "bfloat16"}[report["engine_precision"]]
    assert float(match.group(4)) == pytest.approx(
        round(round_["engine"]["useful_flops_per_second"] / round_["peak_flops_per_second"], 2), abs=0.011
    )
    assert float(match.group(3)) == pytest.approx(
        round(round_["engine"]["samples_per_second"] / round_["trainer_bf16_grouped"]["samples_per_second"], 2),
        abs=0.011,
    )
    # The peak is the better of two samples bracketing the engine's run; steal and page faults are recorded.
    assert round_["peak_flops_per_second"] == max(round_["peak_samples"]) and len(round_["peak_samples"]) == 2
    for name in CONTENDERS:
        assert round_[name]["page_faults_per_step"] >= 0
        assert round_[name]["steal_fraction"] is None or 0 <= round_[name]["steal_fraction"] <= 1
    # Useful FLOP/s counts real tokens only: 6 x non-embedding parameters x real tokens / seconds.
    flops = report["flops_per_real_token"] * round_["engine"]["real_tokens"] / round_["engine"]["seconds"]
    assert flops == pytest.approx(round_["engine"]["useful_flops_per_second"])


def test_bad_option_is_one_line_error(capsys):
    bench = load_bench()
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--train_samples", "10"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --train_samples (10) must cover at least two batches")


def load_gpu_bench():
    spec = importlib.util.spec_from_file_location("bench_gpu", BENCH.parent / "bench_gpu.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_gpu"] = module
    spec.loader.exec_module(module)
    return module


def test_gpu_bench_vs_trainer_dry_run_on_a_cpu(tmp_path, capsys):
    """The GPU comparison's plumbing, tiny models on a CPU: both loops train the same steps, the JSON says so."""
    gpu_bench = load_gpu_bench()
    assert gpu_bench.main(["--vs_trainer", "--dry_run", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "bench_gpu_vs_trainer.json").read_text())
    assert set(report["models"]) == {"bert-base", "vit-b16"} and report["precision"] == "no"
    for name, row in report["models"].items():
        for contender in ("engine", "trainer"):
            measured = row[contender]
            assert measured["timed_steps"] == 3 and measured["samples_per_second"] > 0
            # FLOP/s = 6 x non-embedding parameters x tokens per second, from the numbers it reports.
            tokens_per_second = measured["samples_per_second"] * measured["tokens_per_sample"]
            assert measured["model_flops_per_second"] == pytest.approx(
                6 * measured["non_embedding_parameters"] * tokens_per_second
            )
        assert row["engine"]["non_embedding_parameters"] == row["trainer"]["non_embedding_parameters"]
        assert row["engine_vs_trainer"] == pytest.approx(
            row["engine"]["samples_per_second"] / row["trainer"]["samples_per_second"], abs=1e-3
        )
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("bert-base_engine_vs_trainer=")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--vs_trainer"], "needs a CUDA GPU"),
        (["--vs_trainer", "--dry_run", "--steps", "3"], "must exceed --warmup_steps"),
    ],
)
def test_gpu_bench_refuses_what_it_cannot_do(argv, message, capsys, tmp_path):
    import torch

    if torch.cuda.is_available() and "--dry_run" not in argv:
        pytest.skip("a GPU is here")
    assert load_gpu_bench().main([*argv, "--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err
