"""`finetune figures` writes each PNG with a JSON of its numbers, and the attention numbers are probabilities."""

import json
import math
import shutil
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from finetune.commands import figures
from finetune.models.scratch import ScratchTransformerConfig, ScratchTransformerForSequenceClassification


@pytest.fixture
def run_dir(tmp_path, tiny_bert_dir):
    """A run as the sentiment recipe leaves it: the fine-tuned model at the top, the scratch one in scratch/."""
    import torch
    import yaml
    from transformers import AutoModelForSequenceClassification

    run = tmp_path / "run"
    shutil.copytree(tiny_bert_dir, run)
    tuned = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir)
    with torch.no_grad():  # "fine-tuning" that moves layer 1's queries only: layer 2 differs through its input
        tuned.bert.encoder.layer[0].attention.self.query.weight.mul_(3.0)
    tuned.save_pretrained(run)
    (run / "config.yaml").write_text(yaml.safe_dump({"model": str(tiny_bert_dir)}))  # what the run started from
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    config = ScratchTransformerConfig(
        vocab_size=len(tokenizer), d_model=16, n_heads=2, n_layers=3, d_ff=32, max_position_embeddings=64,
        num_labels=2, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    ScratchTransformerForSequenceClassification(config).save_pretrained(run / "scratch")
    tokenizer.save_pretrained(run / "scratch")
    return run


def assert_probability_rows(rows):
    for row in rows:
        assert all(0.0 <= p <= 1.0 for p in row)
        assert math.isclose(sum(row), 1.0, abs_tol=1e-4)


def check_outputs(out, expected_layers):
    for name in ("positional_encoding", "attention_pretrained_vs_scratch"):
        assert (out / f"{name}.png").stat().st_size > 0
    table = json.loads((out / "positional_encoding.json").read_text())["table"]
    assert table[0][:2] == [0.0, 1.0]  # position 0: sin(0), cos(0)
    attention = json.loads((out / "attention_pretrained_vs_scratch.json").read_text())
    assert [len(m["focus_attention_per_layer"]) for m in attention["models"]] == expected_layers
    for model in attention["models"]:
        assert model["tokens"][model["focus_index"]] == "it"
        assert_probability_rows(model["focus_attention_per_layer"])
        assert_probability_rows(model["last_layer_attention"])
        assert len(model["last_layer_attention"]) == len(model["tokens"])


def test_figures_for_a_run(run_dir, tmp_path, tiny_bert_dir):
    out = tmp_path / "figures"
    assert figures.main(["--run_dir", str(run_dir), "--out", str(out)]) == 0
    check_outputs(out, expected_layers=[2, 3])  # tiny BERT: 2 layers; scratch: 3
    assert_no_local_path(out)

    # Before / after fine-tuning, checked against transformers' own BERT run on the two checkpoints.
    import torch
    from transformers import BertModel

    assert (out / "attention_before_after.png").stat().st_size > 0
    numbers = json.loads((out / "attention_before_after.json").read_text())
    encoding = AutoTokenizer.from_pretrained(run_dir)(figures.SENTENCE, return_tensors="pt")
    for key, folder in (("before", tiny_bert_dir), ("after", run_dir)):
        model = BertModel.from_pretrained(folder, attn_implementation="eager").eval()
        with torch.no_grad():
            expected = torch.stack(model(**encoding, output_attentions=True).attentions)[:, 0].mean(dim=1)
        assert torch.allclose(torch.tensor(numbers[key]), expected, atol=1e-6), key
        for layer in numbers[key]:
            assert_probability_rows(layer)
    difference = torch.tensor(numbers["after"]) - torch.tensor(numbers["before"])
    assert torch.allclose(torch.tensor(numbers["difference"]), difference, atol=1e-7)
    assert min(numbers["mean_abs_change_per_layer"]) > 0  # the changed queries moved the attention of both layers
    assert len(numbers["scratch_after_training"]) == 3 and numbers["scratch_tokens"] == numbers["tokens"]
    for layer in numbers["scratch_after_training"]:
        assert_probability_rows(layer)


def test_figures_without_a_run_use_packaged_minilm_and_a_random_scratch_model(tmp_path):
    assert figures.main(["--out", str(tmp_path)]) == 0
    check_outputs(tmp_path, expected_layers=[6, 4])  # MiniLM: 6 layers; default scratch: 4
    labels = [m["label"] for m in json.loads((tmp_path / "attention_pretrained_vs_scratch.json").read_text())["models"]]
    assert "randomly initialised" in labels[1]
    assert_no_local_path(tmp_path)


def assert_no_local_path(folder):
    """The JSON beside each figure is committed (docs/figures): publishing it changes nothing, no path is in it."""
    from finetune.reporting.card import public

    for numbers in folder.glob("*.json"):
        text = numbers.read_text()
        assert public(text) == text, numbers.name


def test_run_without_scratch_model_is_a_user_error(tiny_bert_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        figures.main(["--run_dir", str(tiny_bert_dir), "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]  # (progress bars share stderr)
    assert len(errors) == 1 and "scratch" in errors[0] and "Traceback" not in err, err


def test_run_without_config_yaml_is_a_user_error_and_writes_nothing(run_dir, tmp_path, capsys):
    (run_dir / "config.yaml").unlink()
    out = tmp_path / "figures"
    with pytest.raises(SystemExit) as exit_info:
        figures.main(["--run_dir", str(run_dir), "--out", str(out)])
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "config.yaml" in errors[0]
    assert not out.exists()


def test_the_committed_figures_carry_no_local_path():
    """docs/figures/ and docs/studies/ are in git and render on GitHub: none of their numbers names a local path."""
    docs = Path(__file__).resolve().parent.parent / "docs"
    assert_no_local_path(docs / "figures")
    for folder in (docs / "studies").iterdir():
        assert_no_local_path(folder)
