"""The bad-input matrix: hostile but realistic inputs, by family, for every verb they reach.

Each row is one input a user could give. Whatever it is, the answer is one line `error: ...` that names what is
wrong and how to fix it, exit code 2, no traceback, and nothing changed: the earlier run, the inputs and the
other runs come out byte for byte the same. Families (issue 17): data files, configuration values, images, and
the inputs of predict / generate / merge / push. Add a row whenever a new kind of input appears.

Helpers (run_cli, snapshot, assert_one_line_error) are tests/test_bad_inputs.py's; cases already there are not
repeated here.
"""

import json
import shutil
import struct
import sys
import zlib
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_bad_inputs import assert_one_line_error, run_cli, snapshot  # noqa: E402
from tiny_models import tiny_gpt2, tiny_vit  # noqa: E402

from finetune.core import run_directory  # noqa: E402


def png_claiming(width, height) -> bytes:
    """A PNG header announcing width x height (no pixel data): PIL refuses it as a decompression bomb on open."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\0" * 16))
        + chunk(b"IEND", b"")
    )


def write_csv(path, header, rows):
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def image_folder(root, extra=None):
    """Two classes of 6 small PNGs each, plus `extra` {relative name: bytes}."""
    from PIL import Image

    for label, colour in (("red", (200, 10, 10)), ("blue", (10, 10, 200))):
        (root / label).mkdir(parents=True)
        for i in range(6):
            Image.new("RGB", (12, 12), tuple(max(0, c - 9 * i) for c in colour)).save(root / label / f"{i}.png")
    for name, data in (extra or {}).items():
        (root / name).write_bytes(data)
    return root


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tweets_small_csv):
    """Every bad input file, once (read-only for the tests: snapshotted around each case)."""
    root = tmp_path_factory.mktemp("bad-inputs")
    good_rows = [line for line in Path(tweets_small_csv).read_text().splitlines()[1:60]]
    write_csv(
        root / "numeric_text.csv", "text,label", [f"{i},{'positive' if i % 2 else 'negative'}" for i in range(60)]
    )
    write_csv(root / "float_labels.csv", "text,label", [f"tweet number {i},{float(i % 2)}" for i in range(60)])
    write_csv(root / "tiny.csv", "text,label", ["good,positive", "bad,negative", "fine,positive"])
    write_csv(root / "two_rows.csv", "text,label", ["good,positive", "bad,negative"])
    write_csv(root / "short_texts.csv", "text,label", [f"t{i},positive" for i in range(30)])
    write_csv(root / "missing_text.csv", "text,label", [*good_rows[:30], ",positive", *good_rows[30:]])
    (root / "broken.jsonl").write_text('{"text": "fine", "label": "positive"}\n{"text": "broken", "label": \n')
    (root / "list_text.jsonl").write_text(
        "".join(json.dumps({"text": ["a", "list"], "label": ["positive", "negative"][i % 2]}) + "\n" for i in range(40))
    )
    (root / "dict_label.jsonl").write_text(
        "".join(json.dumps({"text": f"text {i}", "label": {"name": "positive"}}) + "\n" for i in range(40))
    )
    (root / "binary.csv").write_bytes(bytes(range(256)) * 40)
    (root / "junk.parquet").write_text("this is not parquet")
    (root / "empty.jsonl").write_text("")
    (root / "labels_only.csv").write_text("label\npositive\nnegative\n")
    (root / "bad_line.yaml").write_text("learning_rate: 1e-3\nbatch_size: 8\nmax_steps: [3\nseed: 1\n")
    (root / "tab.yaml").write_text("learning_rate: 1e-3\n\tbatch_size: 8\n")
    (root / "list_value.yaml").write_text("learning_rate: [0.1, 0.2]\n")
    (root / "nested.yaml").write_text("lora:\n  r: 8\n")
    (root / "text.txt").write_text("a plain text file\n")
    image_folder(root / "bomb_folder", {"red/huge.png": png_claiming(40000, 40000)})
    image_folder(root / "empty_image_folder", {"blue/empty.png": b""})
    image_folder(root / "truncated_folder", {"red/cut.png": png_claiming(12, 12)[:40]})
    (root / "bomb.png").write_bytes(png_claiming(40000, 40000))
    (root / "empty.png").write_bytes(b"")
    (root / "a_folder").mkdir()
    return root


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_bert_dir):
    """Models the verbs read, and an earlier finished run every train case points at (with --overwrite)."""
    root = tmp_path_factory.mktemp("runs")
    classifier = root / "classifier"
    shutil.copytree(tiny_bert_dir, classifier)
    lm = tiny_gpt2(root / "lm")
    vit = tiny_vit(root / "vit")
    earlier = root / "earlier"
    earlier.mkdir()
    (earlier / "results.json").write_text('{"earlier": "run"}')
    (earlier / "model.safetensors").write_bytes(b"earlier weights")
    run_directory._write_manifest(earlier, status="finished", files=["model.safetensors", "results.json"])
    return {"classifier": classifier, "lm": lm, "vit": vit, "earlier": earlier}


MODELS = {"sentiment": "classifier", "text_generation": "lm", "image_classification": "vit"}
GOOD_DATA = {
    "sentiment": "{tweets}",
    "text_generation": "{tweets}",
    "image_classification": "{inputs}/bomb_folder/../empty_image_folder",
}

# (family, task or verb, name, arguments, text the one error line must hold)
# Train rows: "--dataset X" replaces the good dataset; the earlier run, --model and --overwrite are added.
TRAIN = [
    # data files
    ("data", "sentiment", "numbers in the text column", ["--dataset", "{inputs}/numeric_text.csv"], "text column"),
    (
        "data",
        "text_generation",
        "numbers in the text column",
        ["--dataset", "{inputs}/numeric_text.csv"],
        "text column",
    ),
    ("data", "sentiment", "3 rows: too few to split", ["--dataset", "{inputs}/tiny.csv"], "too few"),
    ("data", "sentiment", "2 rows: too few to split", ["--dataset", "{inputs}/two_rows.csv"], "too few"),
    ("data", "text_generation", "3 rows: too few to split", ["--dataset", "{inputs}/tiny.csv"], "too few"),
    (
        "data",
        "text_generation",
        "too few tokens for one block",
        ["--dataset", "{inputs}/short_texts.csv"],
        "fewer than block_size",
    ),
    ("data", "sentiment", "an empty text cell", ["--dataset", "{inputs}/missing_text.csv"], "row 31"),
    ("data", "sentiment", "a broken JSON line", ["--dataset", "{inputs}/broken.jsonl"], "broken.jsonl"),
    ("data", "text_generation", "a broken JSON line", ["--dataset", "{inputs}/broken.jsonl"], "broken.jsonl"),
    ("data", "sentiment", "lists in the text column", ["--dataset", "{inputs}/list_text.jsonl"], "text column"),
    ("data", "sentiment", "mappings in the label column", ["--dataset", "{inputs}/dict_label.jsonl"], "label column"),
    ("data", "sentiment", "binary junk named .csv", ["--dataset", "{inputs}/binary.csv"], "binary.csv"),
    ("data", "sentiment", "junk named .parquet", ["--dataset", "{inputs}/junk.parquet"], "junk.parquet"),
    ("data", "sentiment", "an empty jsonl file", ["--dataset", "{inputs}/empty.jsonl"], "empty"),
    ("data", "sentiment", "no text column at all", ["--dataset", "{inputs}/labels_only.csv"], "--text_column"),
    (
        "data",
        "sentiment",
        "labels 0.0/1.0 with --labels 0 2",
        ["--dataset", "{inputs}/float_labels.csv", "--labels", "0", "2"],
        "--labels 0 1 2",
    ),
    ("data", "sentiment", "a plain text file for a classifier", ["--dataset", "{inputs}/text.txt"], "--label_column"),
    ("data", "sentiment", "a folder for a dataset", ["--dataset", "{inputs}/a_folder"], "a_folder"),
    # configuration values
    ("config", "sentiment", "YAML error names its line", ["--config", "{inputs}/bad_line.yaml"], "line 3"),
    ("config", "sentiment", "a tab in YAML", ["--config", "{inputs}/tab.yaml"], "line 2"),
    ("config", "sentiment", "a list for a number", ["--config", "{inputs}/list_value.yaml"], "learning_rate"),
    ("config", "sentiment", "a nested mapping", ["--config", "{inputs}/nested.yaml"], "lora"),
    ("config", "sentiment", "max_length past the model's positions", ["--max_length", "100000"], "128"),
    ("config", "text_generation", "block_size past the model's positions", ["--block_size", "4096"], "128"),
    ("config", "sentiment", "unknown tracker", ["--log_with", "nosuchtracker"], "--log_with"),
    ("config", "image_classification", "unknown tracker", ["--log_with", "nosuchtracker"], "--log_with"),
    ("config", "sentiment", "epochs not a number", ["--num_epochs", "nan"], "--num_epochs"),
    ("config", "sentiment", "infinite learning rate", ["--learning_rate", "inf"], "--learning_rate"),
    ("config", "sentiment", "negative seed", ["--seed", "-1"], "--seed"),
    ("config", "sentiment", "seed past 2**32", ["--seed", "99999999999"], "--seed"),
    ("config", "sentiment", "negative weight decay", ["--weight_decay", "-0.1"], "--weight_decay"),
    ("config", "sentiment", "negative gradient clipping", ["--max_grad_norm", "-1"], "--max_grad_norm"),
    ("config", "sentiment", "fp16 without a GPU", ["--mixed_precision", "fp16"], "fp16"),
    ("config", "sentiment", "a single expected label", ["--labels", "positive"], "at least 2"),
    (
        "config",
        "sentiment",
        "an expected label twice",
        ["--labels", "positive", "positive", "negative"],
        "more than once",
    ),
    (
        "config",
        "sentiment",
        "LoRA on modules that do not exist",
        ["--lora", "--lora_target_modules", "nosuch"],
        "nosuch",
    ),
    ("config", "sentiment", "an empty dataset name", ["--dataset", ""], "--dataset"),
    ("config", "sentiment", "an empty model name", ["--model", ""], "--model"),
    ("config", "sentiment", "a NUL byte in output_dir", ["--output_dir", "runs/a\x00b"], "--output_dir"),
    ("config", "text_generation", "more new tokens than positions", ["--max_new_tokens", "5000"], "128"),
    ("config", "image_classification", "zero image size", ["--image_size", "0"], "--image_size"),
    # images
    (
        "images",
        "image_classification",
        "a decompression bomb in the folder",
        ["--dataset", "{inputs}/bomb_folder"],
        "huge.png",
    ),
    ("images", "image_classification", "a zero-byte image", ["--dataset", "{inputs}/empty_image_folder"], "empty.png"),
    ("images", "image_classification", "a truncated header", ["--dataset", "{inputs}/truncated_folder"], "cut.png"),
]
COMMANDS = [
    ("images", "predict", "a decompression bomb", ["predict", "{vit}", "{inputs}/bomb.png"], "bomb.png"),
    ("images", "predict", "a zero-byte image", ["predict", "{vit}", "{inputs}/empty.png"], "empty.png"),
    ("images", "predict", "a folder for an image", ["predict", "{vit}", "{inputs}/a_folder"], "a_folder"),
    ("predict", "predict", "an empty text", ["predict", "{classifier}", ""], "empty"),
    ("predict", "generate", "top_p above 1", ["generate", "{lm}", "Once", "--do_sample", "--top_p", "1.5"], "--top_p"),
    ("predict", "generate", "negative top_k", ["generate", "{lm}", "Once", "--do_sample", "--top_k", "-1"], "--top_k"),
    ("predict", "merge", "a full model, not an adapter", ["merge", "{classifier}"], "no LoRA adapter"),
    ("predict", "push", "a repo id with spaces", ["push", "{earlier}", "--repo_id", "not a repo"], "repo"),
]


def _fill(arg, inputs, runs, tweets):
    return arg.format(inputs=inputs, tweets=tweets, **{k: str(v) for k, v in runs.items()})


@pytest.mark.parametrize("family, task, name, flags, needle", TRAIN, ids=[f"{f}: {t}: {n}" for f, t, n, _, _ in TRAIN])
def test_train(family, task, name, flags, needle, inputs, runs, tweets_small_csv, capsys):
    flags = [_fill(f, inputs, runs, tweets_small_csv) for f in flags]
    base = [
        "--output_dir",
        str(runs["earlier"]),
        "--overwrite",
        "--model",
        str(runs[MODELS[task]]),
        "--dataset",
        _fill(GOOD_DATA[task], inputs, runs, tweets_small_csv),
        "--max_steps",
        "2",
        "--compare",
        "false",
    ]
    before = {"inputs": snapshot(inputs), "runs": snapshot(runs["earlier"].parent)}
    code, err = run_cli(["train", task, *base, *flags], capsys)
    assert_one_line_error(code, err, needle)
    assert {"inputs": snapshot(inputs), "runs": snapshot(runs["earlier"].parent)} == before


@pytest.mark.parametrize(
    "family, verb, name, argv, needle", COMMANDS, ids=[f"{f}: {v}: {n}" for f, v, n, _, _ in COMMANDS]
)
def test_commands(family, verb, name, argv, needle, inputs, runs, tweets_small_csv, capsys):
    argv = [_fill(a, inputs, runs, tweets_small_csv) for a in argv]
    before = {"inputs": snapshot(inputs), "runs": snapshot(runs["earlier"].parent)}
    code, err = run_cli(argv, capsys)
    assert_one_line_error(code, err, needle)
    assert {"inputs": snapshot(inputs), "runs": snapshot(runs["earlier"].parent)} == before


def test_the_matrix_covers_every_family_and_verb():
    assert len(TRAIN) + len(COMMANDS) >= 40
    families = {row[0] for row in TRAIN + COMMANDS}
    assert families == {"data", "config", "images", "predict"}
    assert {row[1] for row in TRAIN} == set(MODELS) and {row[1] for row in COMMANDS} >= {
        "predict",
        "generate",
        "merge",
        "push",
    }


def test_predict_truncates_a_text_longer_than_the_model_takes(runs, capsys):
    """Not an error: the model reads the first max-positions tokens, as training truncated (exit 0, one label)."""
    code, err = run_cli(["predict", str(runs["classifier"]), "word " * 400], capsys)
    assert code == 0, err


def test_the_suggested_labels_work_when_followed(inputs, runs, tmp_path, capsys):
    """Labels written 0.0 / 1.0: --labels 0.0 1.0 (as written) works, and so does the fix a wrong set is told."""
    base = [
        "train",
        "sentiment",
        "--model",
        str(runs["classifier"]),
        "--dataset",
        str(inputs / "float_labels.csv"),
        "--max_steps",
        "1",
        "--compare",
        "false",
        "--max_length",
        "16",
        "--batch_size",
        "8",
    ]
    code, err = run_cli(base + ["--output_dir", str(tmp_path / "a"), "--labels", "0.0", "1.0"], capsys)
    assert code == 0, err
    code, err = run_cli(base + ["--output_dir", str(tmp_path / "b"), "--labels", "0", "2"], capsys)
    assert code == 2 and "--labels 0 1 2" in err[0], err
    suggested = err[0].split("--labels ")[-1].split()
    code, err = run_cli(base + ["--output_dir", str(tmp_path / "b"), "--labels", *suggested], capsys)
    assert code == 0, err
