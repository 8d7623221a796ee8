"""`finetune search`: Optuna on a real SQLite study, driven through the recipes' own run(), tiny BERT.

The truths checked come from outside the search code: the study is read back with Optuna's own API from the
database file, pruning decisions are re-derived from the stored intermediate values, and best.yaml is retrained
with `finetune train` and must reach the best trial's validation metric.
"""

import json
import os
import re
import signal
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from matplotlib.image import imread

ROOT = Path(__file__).resolve().parents[1]
ENV = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
}

# The forced bad range (full fine-tuning: the recipe's YAML defaults to LoRA, which barely moves a random tiny
# model): one of the two learning rates cannot move a tiny GPT-2 in 8 steps, so those trials keep
# their initial validation perplexity while the others improve, and the median rule has something to prune.
SPACE = """\
learning_rate: {type: categorical, choices: [3.0e-3, 1.0e-7]}
warmup_ratio: {type: float, low: 0.0, high: 0.2}
weight_decay: null
batch_size: 8
"""


def flags(tiny_bert_dir, tweets_small_csv, out):
    return [
        "--model",
        str(tiny_bert_dir),
        "--dataset",
        str(tweets_small_csv),
        "--max_length",
        "32",
        "--max_train_samples",
        "160",
        "--max_eval_samples",
        "96",
        "--eval_batch_size",
        "96",
        "--eval_steps",
        "3",
        "--log_steps",
        "5",
        "--mixed_precision",
        "no",
        "--output_dir",
        str(out),
    ]


def lm_flags(gpt2_dir, tweets_small_csv, out):
    return [
        "--model",
        str(gpt2_dir),
        "--dataset",
        str(tweets_small_csv),
        "--condition_on_label",
        "--block_size",
        "32",
        "--eval_batch_size",
        "32",
        "--max_steps",
        "8",
        "--eval_steps",
        "2",
        "--log_steps",
        "2",
        "--max_train_samples",
        "200",
        "--max_eval_samples",
        "32",
        "--max_test_samples",
        "32",
        "--max_new_tokens",
        "2",
        "--mixed_precision",
        "no",
        "--lora",
        "false",
        "--output_dir",
        str(out),
    ]


def search_cmd(task, *args):
    return [sys.executable, "-m", "finetune.cli", "search", task, *args]


def load(db, name):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=name, storage=f"sqlite:///{db}")


def finished(study):
    return [t for t in study.get_trials() if t.state.name in ("COMPLETE", "PRUNED")]


def started(stdout):
    """The trial numbers a search process says it started ("trial 3: starting learning_rate=...")."""
    return [int(m) for m in re.findall(r"^trial (\d+): starting", stdout, flags=re.MULTILINE)]


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    from tiny_models import tiny_gpt2

    return tiny_gpt2(tmp_path_factory.mktemp("gpt2-lm"), kind="lm")


@pytest.mark.slow
def test_search_interrupted_continued_pruned_and_best_yaml_retrains(tmp_path, gpt2_dir, tweets_small_csv):
    out = tmp_path / "search"
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    cmd = search_cmd(
        "text_generation",
        "--n_trials",
        "6",
        "--space",
        str(space),
        "--seed",
        "3",
        *lm_flags(gpt2_dir, tweets_small_csv, out),
    )

    # 1. Start a 6-trial search; press Ctrl-C (SIGINT) as soon as the fifth trial starts, i.e. after 4 finished.
    with open(tmp_path / "stderr.txt", "w") as stderr_file:
        proc = subprocess.Popen(cmd, env=ENV, cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr_file, text=True)
        lines, interrupted = [], False
        for line in proc.stdout:
            lines.append(line)
            if not interrupted and len(started("".join(lines))) == 5:
                proc.send_signal(signal.SIGINT)
                interrupted = True
        proc.wait(timeout=120)
    assert proc.returncode == 130, (tmp_path / "stderr.txt").read_text()[-3000:]
    assert "run the same command again to continue" in (tmp_path / "stderr.txt").read_text()
    db = out / "search.db"
    first = load(db, "text_generation")
    assert len(finished(first)) == 4, [(t.number, t.state.name) for t in first.get_trials()]
    assert [t.state.name for t in first.get_trials()][4] == "FAIL"  # the interrupted trial, not counted
    note = json.loads((out / "trials" / "trial_0004" / "trial.json").read_text())
    assert note["state"] == "FAIL" and "Interrupt" in note["note"]

    # 2. The same command continues the same study to 6 finished trials: numbers go on, none repeated.
    proc = subprocess.run(cmd, env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = load(db, "text_generation")
    trials = study.get_trials()
    assert len(finished(study)) == 6 and len(trials) == 7
    assert [t.number for t in trials] == list(range(7))
    assert started(proc.stdout) == [5, 6]

    # 3. Pruning: at least one trial stopped early, and only where the median rule says so, re-derived here from
    #    the intermediate values Optuna stored: worse (higher perplexity) than the median of the trials complete
    #    before it, at the same evaluation.
    pruned = [t for t in trials if t.state.name == "PRUNED"]
    assert pruned, [(t.number, t.state.name, t.params, t.intermediate_values) for t in trials]
    for t in pruned:
        k = max(t.intermediate_values)
        earlier = [
            c.intermediate_values[k]
            for c in trials
            if c.state.name == "COMPLETE" and c.datetime_complete < t.datetime_complete and k in c.intermediate_values
        ]
        assert len(earlier) >= 2 and t.intermediate_values[k] > statistics.median(earlier), (
            t.number,
            t.intermediate_values,
            earlier,
        )
        note = json.loads((out / "trials" / f"trial_{t.number:04d}" / "trial.json").read_text())
        assert note["state"] == "PRUNED" and "worse than the median" in note["note"]
        assert len(t.intermediate_values) < 4  # stopped before the last of its 4 evaluations
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert all(len(t.intermediate_values) == 4 for t in complete)

    # 4. Reports agree with the database; only the best trial kept its model.
    summary = json.loads((out / "search.json").read_text())
    best = min(complete, key=lambda t: t.value)
    assert summary["best"]["number"] == best.number and summary["best"]["perplexity"] == best.value
    assert summary["direction"] == "minimize" and summary["metric"] == "perplexity"
    assert sorted(t["number"] for t in summary["trials"]) == [t.number for t in trials]
    models = sorted(p.parent.name for p in (out / "trials").glob("*/model.safetensors"))
    assert models == [f"trial_{best.number:04d}"]
    for name in ("search_history.png", "search_slices.png"):
        assert imread(out / name)[..., :3].std() > 0.05, name

    # 5. best.yaml retrains, through the plain train command, to the best trial's validation perplexity.
    retrain = subprocess.run(
        [sys.executable, "-m", "finetune.cli", "train", "text_generation", "--config", str(out / "best.yaml")],
        env=ENV,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert retrain.returncode == 0, retrain.stderr[-3000:]
    history = json.loads((out / "best" / "results.json").read_text())["models"][0]["history"]
    assert min(h["eval"]["perplexity"] for h in history if "eval" in h) == pytest.approx(best.value, rel=1e-6)


@pytest.mark.slow
def test_two_processes_share_one_study(tmp_path, tiny_bert_dir, tweets_small_csv):
    out = tmp_path / "shared"
    space = tmp_path / "space.yaml"
    space.write_text(
        "learning_rate: {type: float, low: 1.0e-4, high: 3.0e-3, log: true}\nbatch_size: 16\nnum_epochs: 1\n"
    )
    db = tmp_path / "team.db"
    procs = [
        subprocess.Popen(
            search_cmd(
                "sentiment",
                "--n_trials",
                "4",
                "--space",
                str(space),
                "--storage",
                f"sqlite:///{db}",
                "--study_name",
                "team",
                "--sampler_seed",
                str(seed),
                *flags(tiny_bert_dir, tweets_small_csv, out),
            ),
            env=ENV,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in (1, 2)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    ran = [set(started(o)) for o, _ in outputs]
    study = load(db, "team")
    numbers = [t.number for t in study.get_trials()]
    assert ran[0] and ran[1] and not ran[0] & ran[1]  # both worked, never on the same trial
    assert sorted(ran[0] | ran[1]) == numbers == list(range(len(numbers)))  # the union, no duplicate numbers
    assert 4 <= len(finished(study)) <= 5  # each process may start one trial while the other finishes the last
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in study.get_trials())


def test_bad_space_and_bad_storage_are_one_line_exit_2(tmp_path, tiny_bert_dir, tweets_small_csv, capsys):
    from finetune.commands.search import main

    def error_of(*args):
        with pytest.raises(SystemExit) as exit_info:
            main(["sentiment", *args, *flags(tiny_bert_dir, tweets_small_csv, tmp_path / "s")])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and err.count("\n") == 1 and err.startswith("error: "), err
        return err

    space = tmp_path / "space.yaml"
    for text, expected in [
        ("learning_rat: 0.1\n", "not a field"),
        ("learning_rate: {type: float, low: 0, high: 1, log: true}\n", "log range"),
        ("batch_size: {type: gaussian}\n", "use float, int or categorical"),
    ]:
        space.write_text(text)
        assert expected in error_of("--space", str(space))
    assert "--n_trials must be at least 1" in error_of("--n_trials", "0")
    err = error_of("--storage", "postgresql://me:secret@127.0.0.1:1/optuna")
    assert "secret" not in err and "***" in err
    assert not (tmp_path / "s" / "trials").exists()


@pytest.mark.parametrize(
    "task, metric, greater",
    [
        ("sentiment", "accuracy", True),
        ("image_classification", "accuracy", True),
        ("text_generation", "perplexity", False),
        ("token_classification", "f1", True),
    ],
)
def test_every_recipe_names_the_metric_a_search_optimises(task, metric, greater):
    """The search optimises what the recipe selects its weights on, in the direction of the one rule."""
    import importlib
    from types import SimpleNamespace

    from finetune.commands.search import objective_metric

    recipe = importlib.import_module(f"recipes.{task}")
    assert objective_metric(recipe, SimpleNamespace(metric_for_best=None)) == (metric, greater)


@pytest.mark.parametrize("diverges", [True, False])
def test_a_diverged_trial_fails_and_the_search_goes_on_while_other_user_errors_stop_it(tmp_path, diverges):
    """Told apart by type (LossDiverged), not by wording: a plain UserError that happens to read "the loss became"
    still stops the search."""
    import dataclasses
    from types import SimpleNamespace

    import optuna

    from finetune.commands.search import make_objective
    from finetune.core.errors import LossDiverged, UserError

    @dataclasses.dataclass
    class Config:
        output_dir: str = ""
        learning_rate: float = 1e-3
        overwrite: bool = False
        resume: bool = False
        compare: bool = True

    def run(config):
        error = LossDiverged if diverges else UserError
        raise error(f"[pretrained] the loss became nan at step 3 (learning rate {config.learning_rate})")

    recipe = SimpleNamespace(TASK="toy", METRIC_FOR_BEST="accuracy", GREATER_IS_BETTER=True, run=run)
    space = {"learning_rate": {"type": "categorical", "choices": [1.0, 2.0]}}
    objective = make_objective(recipe, Config(), space, tmp_path)
    study = optuna.create_study(direction="maximize")
    if diverges:
        study.optimize(objective, n_trials=2)
    else:
        with pytest.raises(UserError, match="the loss became"):
            study.optimize(objective, n_trials=2)
    trials = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("trials/*/trial.json"))]
    assert len(study.trials) == len(trials) == (2 if diverges else 1)
    assert all(t["state"] == "FAIL" and "the loss became nan" in t["note"] for t in trials)
    assert [t.state.name for t in study.trials] == ["FAIL"] * len(trials)


def test_trials_keep_no_optimizer_state_nor_checkpoints_unless_asked_and_best_yaml_forgets_it(
    tmp_path, tiny_bert_dir, tweets_small_csv, capsys
):
    """A trial is never resumed (a stopped search starts the next one): its run keeps no checkpoint once finished,
    while a flag the user gives stays theirs. best.yaml retrains with the recipe's own checkpoint settings."""
    import yaml

    from finetune.commands.search import main
    from finetune.core.run_directory import folder_bytes

    space = tmp_path / "space.yaml"
    space.write_text("learning_rate: {type: categorical, choices: [1.0e-3]}\nbatch_size: 16\nnum_epochs: 1\n")
    sizes = {}
    for name, extra in (("now", []), ("asked", ["--keep_checkpoints", "1", "--save_only_model", "false"])):
        out = tmp_path / name
        assert (
            main(
                [
                    "sentiment",
                    "--n_trials",
                    "1",
                    "--space",
                    str(space),
                    "--keep_all",
                    "--compare",
                    "false",
                    *flags(tiny_bert_dir, tweets_small_csv, out),
                    *extra,
                ]
            )
            == 0
        ), capsys.readouterr().err[-2000:]
        trial = out / "trials" / "trial_0000"
        config = yaml.safe_load((trial / "config.yaml").read_text())
        sizes[name] = folder_bytes(trial)
        if name == "now":
            assert (config["keep_checkpoints"], config["save_only_model"]) == ("none", True)
            assert not (trial / "checkpoints").exists() and (trial / "model.safetensors").is_file()
            best = yaml.safe_load((out / "best.yaml").read_text())
            assert "keep_checkpoints" not in best and "save_only_model" not in best
        else:
            assert (config["keep_checkpoints"], config["save_only_model"]) == (1, False)
            assert list(trial.glob("checkpoints/pretrained/step_*/optimizer.bin"))
    assert sizes["now"] < sizes["asked"] / 2


def test_a_continued_search_samples_new_points_not_the_first_ones_again(tmp_path):
    """Each `finetune search` process opens the study afresh (open_study): the second process, continuing a study of
    three trials, must not replay trials 0, 1 as its trials 3, 4 (the start-up points are random ones from the seed)."""
    import warnings

    from finetune.commands.search import open_study, suggest

    space = {
        "learning_rate": {"type": "float", "low": 1e-5, "high": 1e-3, "log": True},
        "warmup_ratio": {"type": "float", "low": 0.0, "high": 0.2},
    }

    def process(db, n):  # what one search process does: open the study, then ask for n trials
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna's notes on heartbeats outside optimize()
            study = open_study(f"sqlite:///{db}", "s", "sentiment", True, seed=0)
            points = []
            for _ in range(n):
                trial = study.ask()
                points.append(suggest(trial, space))
                study.tell(trial, 0.5)
        return points

    first = process(tmp_path / "a.db", 3)
    continued = process(tmp_path / "a.db", 2)
    assert not any(point in first for point in continued), (first, continued)
    assert process(tmp_path / "b.db", 3) == first  # a fresh search is still fixed by its seed
    assert process(tmp_path / "b.db", 2) == continued  # and so is the same continuation


@pytest.mark.slow
def test_sigterm_between_trials_is_an_interruption_recorded_in_trials_md(tmp_path, tiny_bert_dir, tweets_small_csv):
    """SIGTERM (a scheduler's stop) while a trial loads its data, outside training's own handler: the search stops
    as on Ctrl-C (exit 130, one line saying how to continue, no traceback) and the trial stays in the record as
    interrupted; before, Python's default ended it silently with 143 and the trial vanished from trials.md."""
    out = tmp_path / "search"
    cmd = search_cmd(
        "sentiment",
        "--n_trials",
        "3",
        "--max_steps",
        "3",
        "--eval_steps",
        "3",
        *flags(tiny_bert_dir, tweets_small_csv, out),
    )
    proc = subprocess.Popen(cmd, env=ENV, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout = []
    for line in proc.stdout:
        stdout.append(line)
        if line.startswith("trial 1: starting"):
            proc.send_signal(signal.SIGTERM)
    stderr = proc.stderr.read()
    proc.wait(timeout=120)
    assert proc.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr and "Trial 1 failed" not in stderr, stderr[-3000:]
    assert [line for line in stderr.splitlines() if "search interrupted" in line] == [
        "search interrupted: 1 of 3 trials finished; run the same command again to continue the study"
    ]
    trials = load(out / "search.db", "sentiment").get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL"] and trials[1].user_attrs["interrupted"]
    assert re.search(r"^\| 1 \| interrupted \|", (out / "trials.md").read_text(), flags=re.MULTILINE)
    summary = json.loads((out / "search.json").read_text())
    assert [(t["number"], t["interrupted"]) for t in summary["trials"]] == [(0, False), (1, True)]
