"""`finetune compare` across finished runs of three different recipes: the table, the ranking, the PNG."""

import dataclasses
import json

import pytest
import yaml
from matplotlib.image import imread

from finetune.cli import main as cli_main
from finetune.core.config import TrainingConfig
from finetune.tasks import registry


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory, tiny_bert_dir, tweets_small_csv):
    """Three real runs, one per recipe, tiny models; the sentiment one keeps its scratch comparison."""
    from test_image_classification import tiny_config as image_config
    from test_image_classification import write_folder
    from test_text_generation import _config as lm_config
    from tiny_models import tiny_gpt2, tiny_vit

    from recipes import image_classification, sentiment, text_generation

    root = tmp_path_factory.mktemp("compare")
    sentiment.run(
        sentiment.SentimentConfig(
            output_dir=str(root / "sst"),
            model=str(tiny_bert_dir),
            dataset=str(tweets_small_csv),
            max_length=32,
            batch_size=16,
            max_train_samples=160,
            max_eval_samples=64,
            num_epochs=1,
            learning_rate=1e-3,
            scratch_learning_rate=2e-3,
            scratch_layers=1,
            scratch_d_model=32,
            compare=True,
        )
    )
    text_generation.run(
        lm_config(
            root,
            tiny_gpt2(root / "gpt2"),
            tweets_small_csv,
            output_dir=str(root / "lm"),
            compare=False,
            max_steps=4,
            learning_rate=2e-3,
        )
    )
    image_classification.run(
        image_config(
            root,
            tiny_vit(root / "vit"),
            write_folder(root / "colours", per_class=6),
            output_dir=str(root / "img"),
            num_epochs=1,
        )
    )
    return [root / "sst", root / "lm", root / "img"]


@pytest.mark.slow
def test_compare_three_recipes_table_and_png(three_runs, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert cli_main(["compare", *map(str, three_runs), "--output", str(out)]) == 0
    table = capsys.readouterr().out
    summary = json.loads((out / "compare.json").read_text())
    rows = summary["rows"]

    # One row per trained model, read back from each run's own results.json.
    truth = [(str(d), m) for d in three_runs for m in json.loads((d / "results.json").read_text())["models"]]
    assert len(rows) == len(truth) == 4
    for run_dir, model in truth:
        (row,) = [r for r in rows if r["run_dir"] == run_dir and r["role"] == model["role"]]
        assert row["test"] == model["test"] and row["train_seconds"] == model["train_seconds"]
        assert row["samples_per_second"] == model["samples_per_second"]

    # Ranked within each selection metric, in its own direction: accuracy blocks high to low, perplexity low to high.
    accuracy = [r["value"] for r in rows if r["metric"] == "accuracy"]
    assert len(accuracy) == 3 and accuracy == sorted(accuracy, reverse=True)
    assert [r["metric"] for r in rows] == ["accuracy"] * 3 + ["perplexity"]  # blocks in the order the runs came
    assert rows[-1]["greater_is_better"] is False

    # Hyperparameters that differ: learning_rate (the scratch model's own rate counts), not bookkeeping.
    keys = summary["differing_hyperparameters"]
    assert "learning_rate" in keys and "output_dir" not in keys and "seed" not in keys
    (scratch,) = [r for r in rows if r["role"] == "scratch"]
    assert scratch["hyperparameters"]["learning_rate"] == 2e-3
    for r in rows:
        assert r["run"] in table and r["model"] in table
    assert (out / "compare.md").read_text().count("\n") == len(rows) + 2

    image = imread(out / "compare.png")
    assert image.shape[0] > 200 and image.shape[1] > 600 and image[..., :3].std() > 0.05  # drawn, not blank


def test_compare_refuses_a_folder_that_is_not_a_finished_run(tmp_path, capsys):
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.yaml").write_text("seed: 1\n")
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["compare", str(tmp_path / "half"), "--output", str(tmp_path / "cmp")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "results.json" in err
    assert not (tmp_path / "cmp").exists()


@dataclasses.dataclass
class ExtraConfig(TrainingConfig):
    """A task's config with two fields of its own: one says it is bookkeeping, one is a hyperparameter."""

    report_to_channel: str = dataclasses.field(default="none", metadata={"help": "x", "bookkeeping": True})
    beam_size: int = dataclasses.field(default=1, metadata={"help": "x"})


def _finished_run(folder, config: dict, accuracy: float):
    folder.mkdir(parents=True)
    model = {"name": "m", "role": "pretrained", "test": {"accuracy": accuracy}}
    results = {"task": "extra", "metric_for_best": "accuracy", "greater_is_better": True, "models": [model]}
    (folder / "results.json").write_text(json.dumps(results))
    (folder / "config.yaml").write_text(yaml.safe_dump(config))


def test_a_field_flagged_bookkeeping_is_not_a_differing_hyperparameter(tmp_path, monkeypatch):
    """compare reads "not a hyperparameter" from the task's config fields (registry -> config class), no list."""
    monkeypatch.setitem(registry.TASKS, "extra", registry.Task("extra", __name__, "ExtraConfig", "x", "accuracy"))
    _finished_run(tmp_path / "a", {"output_dir": "a", "report_to_channel": "#a", "beam_size": 1, "seed": 1}, 0.5)
    _finished_run(tmp_path / "b", {"output_dir": "b", "report_to_channel": "#b", "beam_size": 4, "seed": 1}, 0.7)
    assert cli_main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--output", str(tmp_path / "cmp")]) == 0
    assert json.loads((tmp_path / "cmp" / "compare.json").read_text())["differing_hyperparameters"] == ["beam_size"]
