"""`finetune search`: Optuna on a real SQLite study, driven through the recipes' own run(), tiny BERT.

The truths checked come from outside the search code: the study is read back with Optuna's own API from the
database file, pruning decisions are re-derived from the stored intermediate values, and best.yaml is retrained
with `finetune train` and must reach the best trial's validation metric.
"""

import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
from matplotlib.image import imread

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
       "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}

# The forced bad range: half the learning rates cannot move a tiny BERT in 10 steps, so those trials sit at
# their initial accuracy while the others learn, and the median rule has something to prune.
SPACE = """\
learning_rate: {type: categorical, choices: [3.0e-3, 1.0e-7]}
warmup_ratio: {type: float, low: 0.0, high: 0.2}
weight_decay: null
batch_size: 16
num_epochs: 1
"""


def flags(tiny_bert_dir, tweets_small_csv, out):
    return ["--model", str(tiny_bert_dir), "--dataset", str(tweets_small_csv), "--max_length", "32",
            "--max_train_samples", "160", "--max_eval_samples", "96", "--eval_batch_size", "96", "--eval_steps", "3",
            "--log_steps", "5", "--mixed_precision", "no", "--output_dir", str(out)]


def search_cmd(*args):
    return [sys.executable, "-m", "finetune.cli", "search", "sentiment", *args]


def load(db, name="sentiment"):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=name, storage=f"sqlite:///{db}")


def finished(study):
    return [t for t in study.get_trials() if t.state.name in ("COMPLETE", "PRUNED")]


@pytest.mark.slow
def test_search_interrupted_continued_pruned_and_best_yaml_retrains(tmp_path, tiny_bert_dir, tweets_small_csv):
    out = tmp_path / "search"
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    cmd = search_cmd("--n_trials", "6", "--space", str(space), "--seed", "3", *flags(tiny_bert_dir, tweets_small_csv, out))

    # 1. Start a 6-trial search and interrupt it (Ctrl-C) once 4 trials have finished.
    proc = subprocess.Popen(cmd, env=ENV, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    db = out / "search.db"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if db.exists():
            try:
                if len(finished(load(db))) >= 4:
                    break
            except Exception:  # the study is not created yet
                pass
        time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-3000:]
    assert "run the same command again to continue" in stderr
    first = load(db)
    done_before = len(finished(first))
    assert 4 <= done_before < 6, [t.state for t in first.get_trials()]

    # 2. The same command continues the same study to 6 finished trials: numbers continue, none repeated.
    proc = subprocess.run(cmd, env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = load(db)
    trials = study.get_trials()
    assert len(finished(study)) == 6
    assert [t.number for t in trials] == list(range(len(trials)))
    ran_now = [int(line.split()[1].rstrip(":")) for line in proc.stdout.splitlines() if line.startswith("trial ") and "starting" in line]
    assert min(ran_now) >= len([t for t in first.get_trials()]) and len(ran_now) == 6 - done_before

    # 3. Pruning: at least one trial stopped early, and only where the median rule says so (re-derived here from
    #    the intermediate values Optuna stored: worse than the median of the trials complete before it).
    pruned = [t for t in trials if t.state.name == "PRUNED"]
    assert pruned, [(t.number, t.state.name, t.params) for t in trials]
    for t in pruned:
        k = max(t.intermediate_values)
        earlier = [c.intermediate_values[k] for c in trials
                   if c.state.name == "COMPLETE" and c.datetime_complete < t.datetime_complete and k in c.intermediate_values]
        assert len(earlier) >= 2 and t.intermediate_values[k] < statistics.median(earlier), (t.number, t.intermediate_values, earlier)
        note = json.loads((out / "trials" / f"trial_{t.number:04d}" / "trial.json").read_text())
        assert note["state"] == "PRUNED" and "worse than the median" in note["note"]
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert all(len(t.intermediate_values) > max(len(p.intermediate_values) for p in pruned) - 1 for t in complete)

    # 4. Reports agree with the database; only the best trial kept its model.
    summary = json.loads((out / "search.json").read_text())
    best = max(complete, key=lambda t: t.value)
    assert summary["best"]["number"] == best.number and summary["best"]["accuracy"] == best.value
    assert summary["direction"] == "maximize" and summary["metric"] == "accuracy"
    assert sorted(t["number"] for t in summary["trials"]) == [t.number for t in trials]
    models = sorted(p.parent.name for p in (out / "trials").glob("*/model.safetensors"))
    assert models == [f"trial_{best.number:04d}"]
    for name in ("search_history.png", "search_slices.png"):
        assert imread(out / name)[..., :3].std() > 0.05, name

    # 5. best.yaml retrains, through the plain train command, to the best trial's validation accuracy.
    retrain = subprocess.run([sys.executable, "-m", "finetune.cli", "train", "sentiment", "--config", str(out / "best.yaml")],
                             env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert retrain.returncode == 0, retrain.stderr[-3000:]
    history = json.loads((out / "best" / "results.json").read_text())["models"][0]["history"]
    assert max(h["eval"]["accuracy"] for h in history if "eval" in h) == best.value


@pytest.mark.slow
def test_two_processes_share_one_study(tmp_path, tiny_bert_dir, tweets_small_csv):
    out = tmp_path / "shared"
    space = tmp_path / "space.yaml"
    space.write_text("learning_rate: {type: float, low: 1.0e-4, high: 3.0e-3, log: true}\nbatch_size: 16\nnum_epochs: 1\n")
    db = tmp_path / "team.db"
    procs = [subprocess.Popen(search_cmd("--n_trials", "4", "--space", str(space), "--storage", f"sqlite:///{db}",
                                         "--study_name", "team", "--sampler_seed", str(seed),
                                         *flags(tiny_bert_dir, tweets_small_csv, out)),
                              env=ENV, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for seed in (1, 2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    ran = [{int(line.split()[1].rstrip(":")) for line in o.splitlines() if line.startswith("trial ") and "starting" in line}
           for o, _ in outputs]
    study = load(db, "team")
    numbers = [t.number for t in study.get_trials()]
    assert ran[0] and ran[1] and not ran[0] & ran[1]  # both worked, never on the same trial
    assert sorted(ran[0] | ran[1]) == numbers == list(range(len(numbers)))  # the union, no duplicate numbers
    assert 4 <= len(finished(study)) <= 5  # each process may start one trial while the other finishes the last
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in study.get_trials())


def test_bad_space_and_bad_storage_are_one_line_exit_2(tmp_path, tiny_bert_dir, tweets_small_csv, capsys):
    from finetune.search import main

    def error_of(*args):
        with pytest.raises(SystemExit) as exit_info:
            main(["sentiment", *args, *flags(tiny_bert_dir, tweets_small_csv, tmp_path / "s")])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and err.count("\n") == 1 and err.startswith("error: "), err
        return err

    space = tmp_path / "space.yaml"
    for text, expected in [("learning_rat: 0.1\n", "not a field"),
                           ("learning_rate: {type: float, low: 0, high: 1, log: true}\n", "log range"),
                           ("batch_size: {type: gaussian}\n", "use float, int or categorical")]:
        space.write_text(text)
        assert expected in error_of("--space", str(space))
    assert "--n_trials must be at least 1" in error_of("--n_trials", "0")
    err = error_of("--storage", "postgresql://me:secret@127.0.0.1:1/optuna")
    assert "secret" not in err and "***" in err
    assert not (tmp_path / "s" / "trials").exists()
