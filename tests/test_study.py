"""`finetune study data_efficiency`: statistics against numpy/scipy, nested subsets through the recipes' own
build_data, and a tiny study end to end that is killed between cells and resumed."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from finetune.commands import study

# ---- statistics ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 3, 5, 10])
def test_mean_std_and_paired_interval_match_numpy_and_scipy(n):
    from scipy import stats

    rng = np.random.default_rng(n)
    a, b = rng.normal(0.8, 0.05, n), rng.normal(0.7, 0.08, n)
    mean, std = study.mean_std(list(a))
    assert mean == pytest.approx(np.mean(a), abs=1e-12) and std == pytest.approx(np.std(a, ddof=1), abs=1e-12)

    interval = study.paired_interval(list(a), list(b))
    expected = stats.ttest_rel(a, b).confidence_interval(0.95)  # scipy's paired t-test, its own code path
    assert interval["mean"] == pytest.approx(np.mean(a - b), abs=1e-12)
    assert interval["std"] == pytest.approx(np.std(a - b, ddof=1), abs=1e-12)
    assert (interval["low"], interval["high"]) == pytest.approx((expected.low, expected.high), abs=1e-12)
    assert interval["n"] == n


def test_one_seed_has_no_spread_and_no_interval():
    assert study.mean_std([0.7]) == (0.7, None)
    assert study.paired_interval([0.9], [0.6]) == {
        "n": 1,
        "mean": pytest.approx(0.3),
        "std": None,
        "low": None,
        "high": None,
    }


def test_summary_pairs_arms_by_seed_against_the_baseline_and_measures_the_gap_closed():
    cells = [
        {"size": 10, "seed": s, "arm": m, "value": v}
        for s, m, v in [
            (0, "pretrained", 0.9),
            (1, "pretrained", 0.8),
            (1, "scratch", 0.5),
            (0, "scratch", 0.7),
            (0, "scratch_pretrained", 0.8),
            (1, "scratch_pretrained", 0.6),
        ]
    ]
    (row,) = study.summarize(cells, baseline="scratch")["sizes"]
    assert row["arms"]["pretrained"]["mean"] == pytest.approx(0.85)
    differences = row["differences"]
    assert set(differences) == {"pretrained", "scratch_pretrained"}  # every arm but the baseline
    assert differences["pretrained"]["mean"] == pytest.approx(((0.9 - 0.7) + (0.8 - 0.5)) / 2)  # seed with seed
    assert differences["scratch_pretrained"]["mean"] == pytest.approx(((0.8 - 0.7) + (0.6 - 0.5)) / 2)
    assert row["gap_closed"] == pytest.approx((0.7 - 0.6) / (0.85 - 0.6))  # (sp - s) / (p - s), from the means
    (row,) = study.summarize(cells, baseline="pretrained")["sizes"]
    assert differences["pretrained"]["mean"] == pytest.approx(-row["differences"]["scratch"]["mean"])


def test_a_curve_that_falls_with_more_data_is_named_with_the_cells_to_lengthen():
    def row(size, mean, std):
        return {"size": size, "arms": {"pretrained": {"n": 3, "mean": mean, "std": std}}, "differences": {}}

    falling = {"sizes": [row(100, 0.80, 0.01), row(1000, 0.78, 0.01), row(12000, 0.90, None)]}
    (warning,) = study.falling_curves(falling, greater_is_better=True)
    assert "pretrained falls from 0.8 at 100 examples to 0.78 at 1,000" in warning and "--min_examples" in warning
    within_noise = {"sizes": [row(100, 0.80, 0.03), row(1000, 0.78, 0.03)]}
    assert study.falling_curves(within_noise, greater_is_better=True) == []
    # perplexity: lower is better, so a rise is the fall
    assert len(study.falling_curves({"sizes": [row(100, 50.0, 1.0), row(1000, 60.0, 1.0)]}, False)) == 1
    assert study.falling_curves({"sizes": [row(100, 60.0, 1.0), row(1000, 50.0, 1.0)]}, False) == []


def test_the_arms_share_runs_where_they_can_and_set_only_what_they_need():
    assert study.runs_of(["pretrained", "scratch", "scratch_pretrained", "probe"]) == {
        "base": ["pretrained", "scratch"],
        "scratch_pretrained": ["scratch_pretrained"],
        "probe": ["probe"],
    }
    assert study.run_changes("base", ["scratch"], None, frozenset()) == {"compare": True, "skip_pretrained": True}
    assert study.run_changes("base", ["pretrained"], None, frozenset()) == {"compare": False, "skip_pretrained": False}
    assert study.run_changes("scratch_pretrained", ["scratch_pretrained"], "P", frozenset())["scratch_init"] == "P"
    assert study.run_changes("probe", ["probe"], None, frozenset()) == {
        "compare": False,
        "freeze_base": True,
        "learning_rate": 1e-3,
    }
    assert "learning_rate" not in study.run_changes("lora", ["lora"], None, frozenset({"learning_rate"}))
    # the largest size runs only the first seeds asked for
    assert study.plan([100, 1000], [0, 1, 2], largest_seeds=1) == [(100, 0), (1000, 0), (100, 1), (100, 2)]
    assert len(study.plan([100, 1000], [0, 1, 2], largest_seeds=None)) == 6


def test_epochs_scale_with_size():
    assert study.epochs_for(100, min_examples=2000, max_epochs=20) == 20
    assert study.epochs_for(300, 2000, 20) == pytest.approx(2000 / 300)
    assert study.epochs_for(5000, 2000, 20) == 1  # large sets: one pass
    assert study.epochs_for(10, 2000, 20) == 20  # capped


def test_early_stopping_waits_three_passes_over_the_data(tmp_path):
    from recipes.sentiment import SentimentConfig

    base = SentimentConfig(batch_size=32)
    plan = {
        size: study.cell_config(base, tmp_path, size, 0, min_examples=1000, max_epochs=10) for size in (100, 300, 1000)
    }
    assert [(c.num_epochs, c.eval_steps, c.early_stopping_patience) for c in plan.values()] == [
        (10, 8, 3),  # 4 steps a pass, evaluated at each pass's end: 3 evaluations = 3 passes
        (1000 / 300, 6, 6),  # 10 steps a pass, evaluated twice a pass
        (1, 6, 18),  # one pass of 32 steps: it never stops early
    ]
    given = study.cell_config(base, tmp_path, 100, 0, 1000, 10, given=frozenset({"eval_steps"}))
    assert given.eval_steps == base.eval_steps  # what the user set stays
    # validation: a tenth of the training set, at least 200, at most the recipe's own (1,000 for sentiment)
    validation = {size: study.cell_config(SentimentConfig(), tmp_path, size, 0, 3000, 20).max_eval_samples
                  for size in (100, 1000, 5000, 12000)}  # fmt: skip
    assert validation == {100: 200, 1000: 200, 5000: 500, 12000: 1000}


def test_a_cell_keeps_no_optimizer_state_and_no_checkpoint_and_takes_far_less_disk(
    tmp_path, tiny_bert_dir, tweets_small_csv
):
    """Cells are never resumed (a killed study starts the cell again): measured on one tiny cell, run as before
    (the newest full checkpoint kept) and with the study's defaults now."""
    import dataclasses

    from finetune.core.run_directory import folder_bytes, human_size

    module, config_cls = study.load_recipe("sentiment")
    base = config_cls(
        model=str(tiny_bert_dir),
        dataset=str(tweets_small_csv),
        max_length=32,
        batch_size=8,
        eval_batch_size=64,
        mixed_precision="no",
        scratch_layers=1,
        scratch_d_model=32,
        lora=False,
    )
    cell = lambda name, **given: dataclasses.replace(
        study.cell_config(base, tmp_path / name, 40, 0, min_examples=80, max_epochs=2, given=frozenset(given)), **given
    )
    run = lambda name: study.cell_dir(tmp_path / name, 40, 0) / "base"
    now, before, asked = (
        cell("now"),
        cell("before", keep_checkpoints=1, save_only_model=False),
        cell("asked", keep_checkpoints="all"),
    )
    assert (now.keep_checkpoints, now.save_only_model) == ("none", True)
    assert (asked.keep_checkpoints, asked.save_only_model) == ("all", True)  # a flag the user gave stays theirs
    sizes = {}
    for name, config in (("before", before), ("now", now), ("asked", asked)):
        assert config.output_dir == str(run(name))
        study.run_logged(module, config, run(name))
        sizes[name] = folder_bytes(run(name))
    print(f"one tiny cell: {human_size(sizes['before'])} before, {human_size(sizes['now'])} now")
    assert (run("now") / "results.json").is_file() and not (run("now") / "checkpoints").exists()
    assert sizes["now"] < sizes["before"] / 2
    assert (run("before") / "checkpoints").exists()
    # --keep_checkpoints all given: kept; the first epoch's holds no optimizer state, the end of training's is full
    first, last = sorted(run("asked").glob("checkpoints/pretrained/step_*"))
    assert not (first / "optimizer.bin").exists() and (last / "optimizer.bin").is_file()


# ---- nested subsets, through the recipes' own data step --------------------------------------------------------


def _train_and_test(module, config):
    data = module.build_data(config)
    return list(data.splits["train"]["text"]), list(data.splits["test"]["text"])


@pytest.mark.parametrize("task", ["sentiment", "text_generation"])
def test_subsets_are_nested_per_seed_and_the_test_split_is_whole(task, tmp_path, tweets_small_csv):
    module, config_cls = study.load_recipe(task)
    base = config_cls(dataset=str(tweets_small_csv))
    orders = {}
    for seed in (0, 1):
        previous, first_test = [], None
        for size in (30, 90, 270):
            config = study.cell_config(base, tmp_path, size, seed, min_examples=100, max_epochs=5)
            assert (config.max_train_samples, config.seed, config.compare) == (size, seed, True)
            train, test = _train_and_test(module, config)
            assert len(train) == size and len(set(train)) == size
            assert train[: len(previous)] == previous  # the smaller set is the start of the larger one
            previous = train
            first_test = first_test or test
            assert test == first_test  # every size of a seed is tested on the same, whole test split
        orders[seed] = previous
        assert not (set(previous) & set(first_test))  # no test example is ever trained on
    assert orders[0] != orders[1]  # each seed draws its own subsets


# ---- a tiny study end to end, killed between cells and resumed ------------------------------------------------


def _study_command(out, model, dataset):
    return [
        sys.executable,
        "-m",
        "finetune.cli",
        "study",
        "data_efficiency",
        "sentiment",
        "--arms",
        "pretrained,scratch",
        "--sizes",
        "80,40",
        "--seeds",
        "0,1",
        "--largest_seeds",
        "1",
        "--output_dir",
        str(out),
        "--min_examples",
        "80",
        "--max_epochs",
        "4",
        "--model",
        str(model),
        "--dataset",
        str(dataset),
        "--max_length",
        "32",
        "--batch_size",
        "8",
        "--eval_batch_size",
        "64",
        "--max_eval_samples",
        "48",
        "--learning_rate",
        "1e-3",
        "--log_steps",
        "2",
        "--scratch_layers",
        "1",
        "--scratch_d_model",
        "32",
    ]


@pytest.mark.slow
def test_tiny_study_killed_between_runs_resumes_and_reports(tmp_path, tiny_bert_dir, tweets_small_csv):
    """Two arms (pretrained and scratch share the recipe's own run), 2 sizes x 2 seeds, the largest size with the
    first seed only: 3 runs. Killed after the first, the same command trains only the rest."""
    out = tmp_path / "study"
    command = _study_command(out, tiny_bert_dir, tweets_small_csv)
    first = study.cell_dir(out, 40, 0) / "base"
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while not study.done_file(first).exists():
        assert process.poll() is None, process.stdout.read()
        assert time.monotonic() < deadline, "the first run did not finish in time"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)  # a real kill: no handler runs
    process.wait(timeout=30)
    done_before = sorted(p.with_suffix("") for p in out.glob("size_*/seed_*/*.json"))
    assert first in done_before and len(done_before) < 3
    stamp = (first / "results.json").stat().st_mtime_ns

    resumed = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"{len(done_before)} of 3 runs already done" in resumed.stdout
    assert (first / "results.json").stat().st_mtime_ns == stamp  # finished runs are not trained again

    report = json.loads((out / study.STUDY_FILE).read_text())
    assert report["metric"] == "accuracy" and report["greater_is_better"] is True  # read from results.json
    cells = report["cells"]
    assert sorted((c["size"], c["seed"], c["arm"]) for c in cells) == sorted(
        (size, seed, arm) for size, seed in ((40, 0), (40, 1), (80, 0)) for arm in ("pretrained", "scratch")
    )
    for cell in cells:
        results = json.loads((out / cell["dir"] / "results.json").read_text())
        (entry,) = [m for m in results["models"] if m["role"] == cell["arm"]]
        assert cell["value"] == entry["test"]["accuracy"] and 0 <= cell["value"] <= 1
        assert cell["steps"] == entry["steps"] and cell["seconds"] > 0
        # epochs scale with size: 40 examples get 80/40 = 2 passes of 5 batches, 80 get one pass of 10 (or
        # fewer: early stop)
        assert 1 <= cell["steps"] <= 10
    for row in report["summary"]["sizes"]:
        for arm, stats in row["arms"].items():
            values = [c["value"] for c in cells if c["size"] == row["size"] and c["arm"] == arm]
            assert stats["mean"] == pytest.approx(np.mean(values)) and stats["n"] == len(values)
            assert stats["std"] == (pytest.approx(np.std(values, ddof=1)) if len(values) > 1 else None)
    assert "pretrained - scratch [95% CI]" in resumed.stdout

    import matplotlib.image

    image = matplotlib.image.imread(out / study.FIGURE_FILE)
    assert image.shape[0] > 300 and image.shape[1] > 500 and image[..., :3].std() > 0.05  # a drawn figure, not blank

    # report redraws from study.json alone; another configuration in the same folder is refused
    figures = tmp_path / "figures"
    assert study.main(["report", str(out), "--out", str(figures)]) == 0
    assert (figures / study.FIGURE_FILE).stat().st_size > 0
    assert "| 40 |" in (figures / "data_efficiency.md").read_text()
    other = subprocess.run(command[:-2] + ["--scratch_d_model", "64"], capture_output=True, text=True, timeout=120)
    errors = [line for line in other.stderr.splitlines() if line.startswith("error: ")]
    assert other.returncode == 2 and len(errors) == 1 and "other settings" in errors[0], other.stderr


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["data_efficiency", "sentiment", "--seed", "3"], "--seeds"),
        (["data_efficiency", "sentiment", "--max_train_samples", "3"], "--sizes"),
        (["data_efficiency", "sentiment", "--sizes", "10,x"], "comma-separated"),
        (["data_efficiency", "nosuchtask"], "unknown task"),
        (["bootstrap", "sentiment"], "unknown study"),
        (["data_efficiency", "sentiment", "--arms", "pretrained,bert"], "unknown arm bert"),
        (["data_efficiency", "sentiment", "--arms", "pretrained,probe", "--baseline", "scratch"], "--baseline"),
        (["data_efficiency", "sentiment", "--freeze_base", "true"], "--arms probe"),
        (["data_efficiency", "sentiment", "--arms", "pretrained", "--scratch_init", "x"], "scratch_pretrained"),
    ],
)
def test_bad_study_arguments_are_one_line(argv, needle, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        study.main([*argv, "--output_dir", str(tmp_path / "s")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err
    assert not (tmp_path / "s").exists()


def test_a_bad_recipe_input_stops_the_first_cell_with_one_line(tmp_path, tiny_bert_dir, tweets_small_csv, capsys):
    out = tmp_path / "s"
    argv = [
        "data_efficiency",
        "sentiment",
        "--sizes",
        "20",
        "--seeds",
        "0",
        "--output_dir",
        str(out),
        "--model",
        str(tiny_bert_dir),
        "--dataset",
        str(tweets_small_csv),
    ]
    for column in ("sentence", "body"):  # the second command has other settings, but no cell had finished
        with pytest.raises(SystemExit) as exit_info:
            study.main([*argv, "--text_column", column])
        assert exit_info.value.code == 2
        err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
        assert len(err) == 1 and f"no column '{column}'" in err[0], err
    assert json.loads((out / study.STUDY_FILE).read_text())["cells"] == []


@pytest.mark.slow
def test_text_generation_study_reads_perplexity_lower_is_better_from_the_runs(tmp_path, tweets_small_csv):
    from tiny_models import tiny_gpt2

    model = tiny_gpt2(tmp_path / "gpt2")
    recipe_argv = [
        "--model",
        str(model),
        "--dataset",
        str(tweets_small_csv),
        "--block_size",
        "32",
        "--batch_size",
        "8",
        "--eval_batch_size",
        "32",
        "--max_eval_samples",
        "16",
        "--max_test_samples",
        "32",
        "--max_new_tokens",
        "4",
        "--scratch_layers",
        "1",
        "--scratch_d_model",
        "32",
        "--learning_rate",
        "3e-3",
        "--scratch_learning_rate",
        "3e-3",
    ]
    report = study.data_efficiency(
        "text_generation",
        [24],
        [0],
        tmp_path / "study",
        recipe_argv,
        min_examples=24,
        max_epochs=1,
        arms=["pretrained", "scratch"],
    )
    assert report["metric"] == "perplexity" and report["greater_is_better"] is False
    for cell in report["cells"]:
        results = json.loads((tmp_path / "study" / cell["dir"] / "results.json").read_text())
        assert results["greater_is_better"] is False
        (entry,) = [m for m in results["models"] if m["role"] == cell["arm"]]
        assert cell["value"] == entry["test"]["perplexity"] > 1
    table = study.format_table(report)
    assert "lower is better" in table and "perplexity" in table
    assert (tmp_path / "study" / study.FIGURE_FILE).stat().st_size > 0


def test_a_size_larger_than_the_training_split_is_refused_before_any_cell(tmp_path, tiny_bert_dir):
    """64 rows leave fewer than 64 to train on: "5000" must not train on those and be reported as 5,000."""
    from conftest import write_tweets_csv

    dataset = write_tweets_csv(tmp_path / "tiny.csv", per_class=32)
    module, config_cls = study.load_recipe("sentiment")
    available = len(module.build_data(config_cls(dataset=str(dataset))).splits["train"])
    assert 16 < available < 64
    out = tmp_path / "s"
    recipe_argv = ["--model", str(tiny_bert_dir), "--dataset", str(dataset)]
    with pytest.raises(study.UserError) as err:
        study.data_efficiency("sentiment", [16, 5000], [0], out, recipe_argv)
    message = str(err.value)
    assert f"--sizes 5000: the training split holds only {available} examples" in message
    assert f"the largest possible size is {available}" in message and "\n" not in message
    assert not list(out.glob("size_*"))  # refused before any cell trained


def test_the_committed_table_and_readme_come_from_the_committed_study():
    """docs/figures/data_efficiency.md and README's table are what `finetune study report` draws from the committed
    docs/studies/sentiment/study.json (make figures), not numbers typed by hand."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    committed = json.loads((root / "docs" / "studies" / "sentiment" / "study.json").read_text())
    assert committed["settings"]["arms"] == study.DEFAULT_ARMS  # the default study, every default arm
    assert (root / "docs" / "figures" / "data_efficiency.md").read_text() == study.report_text(committed)
    assert study.format_table(committed, markdown=True) in (root / "README.md").read_text()
    sizes = [row["size"] for row in committed["summary"]["sizes"]]
    assert sizes[-1] == committed["sizes"][-1] >= 10_000  # the curve spans the data, to the recipe's own set


@pytest.mark.slow
def test_scratch_pretrained_arm_pretrains_once_and_starts_the_scratch_model_from_it(
    tmp_path, tiny_bert_dir, tweets_small_csv
):
    """Without --scratch_init the study pretrains our transformer itself (with --pretrain's flags, the task's sizes
    and tokenizer), once; the scratch_pretrained run starts from it; the lora arm trains adapters and the probe arm
    the head alone; a second call trains nothing again."""
    import yaml

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(f"the flight number {i} was late again today" for i in range(200)) + "\n")
    command = _study_command(tmp_path, tiny_bert_dir, tweets_small_csv)
    recipe_argv = command[command.index("--model") :]
    pretrain_argv = ["--corpus", str(corpus), "--max_steps", "3", "--max_length", "32", "--max_eval_samples", "16"]
    pretrain_argv += ["--batch_size", "16", "--eval_steps", "3", "--mixed_precision", "no"]
    out = tmp_path / "study"
    run_study = lambda: study.data_efficiency(
        "sentiment",
        [40],
        [0],
        out,
        recipe_argv,
        min_examples=40,
        max_epochs=1,
        arms=["scratch", "scratch_pretrained", "lora", "probe"],
        pretrain_argv=pretrain_argv,
    )
    report = run_study()
    pretraining = json.loads((out / "pretrain" / "results.json").read_text())
    assert (pretraining["objective"], pretraining["steps"]) == ("mlm", 3)
    assert report["pretraining"]["run"] == "pretrain" and "3 steps" in report["pretraining"]["description"]
    assert str(tmp_path) not in json.dumps(report["pretraining"])  # what the study says of it names no local path
    config = yaml.safe_load((study.cell_dir(out, 40, 0) / "scratch_pretrained" / "config.yaml").read_text())
    assert (config["scratch_init"], config["skip_pretrained"]) == (str(out / "pretrain"), True)
    base = yaml.safe_load((study.cell_dir(out, 40, 0) / "base" / "config.yaml").read_text())
    assert base["skip_pretrained"] is True and base["scratch_init"] is None  # scratch alone, from random weights
    results = json.loads((study.cell_dir(out, 40, 0) / "scratch_pretrained" / "results.json").read_text())
    assert [m["role"] for m in results["models"]] == ["scratch"]
    assert {c["arm"] for c in report["cells"]} == {"scratch", "scratch_pretrained", "lora", "probe"}
    (row,) = report["summary"]["sizes"]
    assert set(row["differences"]) == {"scratch_pretrained", "lora", "probe"}  # against the baseline, scratch
    from safetensors.torch import load_file

    probe = study.cell_dir(out, 40, 0) / "probe"
    assert "linear probe (--freeze_base)" in (probe.parent / "probe.log").read_text()
    before, after = load_file(tiny_bert_dir / "model.safetensors"), load_file(probe / "model.safetensors")
    body = [name for name in after if name.startswith("bert.")]
    assert body and all(after[name].equal(before[name]) for name in body)  # the probe trained the head only
    assert not after["classifier.weight"].equal(before["classifier.weight"])
    lora = yaml.safe_load((study.cell_dir(out, 40, 0) / "lora" / "config.yaml").read_text())
    assert (lora["lora"], lora["compare"], lora["learning_rate"]) == (True, False, 1e-3)  # the given rate stays
    assert (study.cell_dir(out, 40, 0) / "lora" / "adapter_config.json").is_file()  # adapters, not a full model
    stamp = (out / "pretrain" / "results.json").stat().st_mtime_ns
    run_study()  # the same study again: everything is done
    assert (out / "pretrain" / "results.json").stat().st_mtime_ns == stamp  # pretrained once
