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
import sqlite3
import struct
import subprocess
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
    # (predict reads a one-column file whose first line is not --text_column as texts without a header: two columns)
    (root / "no_text_column.csv").write_text("label,id\npositive,1\nnegative,2\n")
    (root / "bad_line.yaml").write_text("learning_rate: 1e-3\nbatch_size: 8\nmax_steps: [3\nseed: 1\n")
    (root / "tab.yaml").write_text("learning_rate: 1e-3\n\tbatch_size: 8\n")
    (root / "list_value.yaml").write_text("learning_rate: [0.1, 0.2]\n")
    (root / "nested.yaml").write_text("lora:\n  r: 8\n")
    (root / "text.txt").write_text("a plain text file\n")
    (root / "qa.jsonl").write_text(  # extractive QA: 12 questions on 12 contexts, one answer each
        "".join(
            json.dumps({"id": f"q{i}", "question": "where was the meeting?",
                        "context": f"the meeting number {i} was held in paris last year.",
                        "answers": {"text": ["paris"], "answer_start": [len(f"the meeting number {i} was held in ")]}})
            + "\n"
            for i in range(12)
        )
    )  # fmt: skip
    image_folder(root / "bomb_folder", {"red/huge.png": png_claiming(40000, 40000)})
    image_folder(root / "empty_image_folder", {"blue/empty.png": b""})
    image_folder(root / "truncated_folder", {"red/cut.png": png_claiming(12, 12)[:40]})
    (root / "bomb.png").write_bytes(png_claiming(40000, 40000))
    (root / "empty.png").write_bytes(b"")
    (root / "a_folder").mkdir()
    # issue 22, section 5: files as people download them, and places that cannot be written
    (root / "eng.train").write_text("-DOCSTART- -X- O\n\n" + "EU NNP B-ORG\nrejects VBZ O\nGerman JJ B-MISC\n\n" * 20)
    (root / "ner.conll").write_text(
        "".join(f"Peter NNP B-PER\nBlackburn{i} NNP I-PER\nvisits VBZ O\nParis NNP B-LOC\n\n" for i in range(30))
    )
    (root / "ragged.conll").write_text("Peter NNP B-PER\nBlackburn NNP I-PER\nvisits\n\n" * 12)
    (root / "ner.jsonl").write_text(
        "".join(json.dumps({"tokens": ["Peter", f"B{i}"], "ner_tags": ["B-PER", "I-PER"]}) + "\n" for i in range(30))
    )
    (root / "junk_data").write_bytes(b"PK\x03\x04\x00\x00" * 50)
    pairs = [{"source": f"thou shalt not kill {i}", "target": f"you shall not murder {i}"} for i in range(40)]
    (root / "pairs.jsonl").write_text("".join(json.dumps(row) + "\n" for row in pairs))
    records = [{"translation": {"en": f"sentence {i}", "fr": f"phrase {i}"}} for i in range(40)]
    del records[2]["translation"]["fr"]
    (root / "translation_one_language.jsonl").write_text("".join(json.dumps(row) + "\n" for row in records))
    empty = [{"text": f"an article {i}", "summary": ""} for i in range(40)]
    (root / "empty_summaries.jsonl").write_text("".join(json.dumps(row) + "\n" for row in empty))
    import pyarrow as pa
    import pyarrow.parquet as pq

    labels = ["positive" if i % 2 else "negative" for i in range(40)]
    labels[27] = None
    pq.write_table(
        pa.table({"text": [f"tweet number {i}" for i in range(40)], "label": labels}), root / "null_label.parquet"
    )
    (root / "latin1.csv").write_bytes(
        b"text,label\n" + "".join(f"caf\u00e9 {i},positive\n" for i in range(20)).encode("latin-1")
    )
    (root / "tabs.csv").write_text("text\tlabel\n" + "".join(f"tweet {i}\tpositive\n" for i in range(20)))
    (root / "texts.txt").write_text("what a flight\nlost my bag\n")
    (root / "locked").mkdir()
    sqlite3.connect(root / "locked.db").close()
    sqlite3.connect(root / "locked" / "search.db").close()
    undo = [lock(root / "locked"), lock(root / "locked.db")]
    yield root
    for command in undo:
        subprocess.run(command, capture_output=True)


def lock(path):
    """Make `path` unwritable, root included (chmod for users; the immutable attribute for root); the undo command.

    (tests/test_crash_safety.py's read_only_dir does the same for a run folder.) Cases that need it are skipped
    where it cannot be done."""
    path.chmod(0o555 if path.is_dir() else 0o444)
    if shutil.which("chattr") and subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode == 0:
        return ["chattr", "-i", str(path)]
    return ["chmod", "755", str(path)]


def writable(path) -> bool:
    try:
        with open(path / ".probe" if path.is_dir() else path, "ab"):
            pass
    except OSError:
        return False
    if path.is_dir():
        (path / ".probe").unlink()
    return True


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


MODELS = {
    "sentiment": "classifier",
    "text_classification": "classifier",
    "text_generation": "lm",
    "image_classification": "vit",
    "token_classification": "classifier",
    "question_answering": "classifier",
    "translation": "classifier",  # a BERT: warm-starts an encoder-decoder
    "summarization": "classifier",
}
GOOD_DATA = {
    "sentiment": "{tweets}",
    "text_classification": "{tweets}",
    "text_generation": "{tweets}",
    "image_classification": "{inputs}/bomb_folder/../empty_image_folder",
    "token_classification": "{inputs}/ner.conll",
    "question_answering": "{inputs}/qa.jsonl",
    "translation": "{inputs}/pairs.jsonl",
    "summarization": "{inputs}/pairs.jsonl",
}

# (family, task or verb, name, arguments, text the one error line must hold)
# Train rows: "--dataset X" replaces the good dataset; the earlier run, --model and --overwrite are added.
TRAIN = [
    # question answering's windows (issue 26)
    (
        "data",
        "question_answering",
        "a question that leaves no room for context",
        ["--max_length", "8"],
        "leaves no room for its context in --max_length 8",
    ),
    (
        "data",
        "question_answering",
        "a --doc_stride that cannot advance",
        ["--max_length", "16", "--doc_stride", "12"],
        "--doc_stride 12 is not smaller than the",
    ),
    # data files
    (
        "data",
        "translation",
        "a translation record without the target language",
        ["--dataset", "{inputs}/translation_one_language.jsonl", "--source_lang", "en", "--target_lang", "fr"],
        "row 3",
    ),
    (
        "data",
        "summarization",
        "every summary empty",
        ["--dataset", "{inputs}/empty_summaries.jsonl", "--text_column", "text", "--summary_column", "summary"],
        "are empty",
    ),
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
    # issue 22, section 5: files as downloaded, and columns named twice
    (
        "data",
        "sentiment",
        "CoNLL data with no telling extension",
        ["--dataset", "{inputs}/eng.train"],
        "token_classification",
    ),
    (
        "data",
        "text_classification",
        "a null label in parquet: the file's row",
        ["--dataset", "{inputs}/null_label.parquet"],
        "row 28",
    ),
    (
        "data",
        "text_classification",
        "one column for text and label",
        ["--text_column", "label"],
        "both name the column",
    ),
    (
        "data",
        "text_classification",
        "one column for text and text pair",
        ["--text_pair_column", "text"],
        "both name the column",
    ),
    (
        "data",
        "text_generation",
        "conditioned on its own text column",
        ["--condition_on_label", "--label_column", "text"],
        "both name",
    ),
    (
        "data",
        "token_classification",
        "one column for tokens and tags",
        ["--dataset", "{inputs}/ner.jsonl", "--tags_column", "tokens"],
        "both name",
    ),
    (
        "data",
        "token_classification",
        "a CoNLL line without its tag",
        ["--dataset", "{inputs}/ragged.conll"],
        "ragged.conll:3",
    ),
    (
        "data",
        "token_classification",
        "binary junk with no extension",
        ["--dataset", "{inputs}/junk_data"],
        "not a text file",
    ),
    (
        "data",
        "text_classification",
        "binary junk with no extension",
        ["--dataset", "{inputs}/junk_data"],
        "not a text file",
    ),
    ("config", "token_classification", "a tag column past the last", ["--tag_index", "7"], "--tag_index"),
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
    (
        "predict",
        "predict",
        "--output in a read-only folder",
        ["predict", "{classifier}", "--file", "{inputs}/texts.txt", "--output", "{inputs}/locked/out.jsonl"],
        "--output",
    ),
    (
        "predict",
        "predict",
        "--output under a file",
        ["predict", "{classifier}", "--file", "{inputs}/texts.txt", "--output", "{inputs}/text.txt/out.jsonl"],
        "a part of the path is a file",
    ),
    (
        "predict",
        "predict",
        "a csv without the text column",
        ["predict", "{classifier}", "--file", "{inputs}/no_text_column.csv"],
        "--text_column",
    ),
    (
        "predict",
        "predict",
        "binary junk as --file",
        ["predict", "{classifier}", "--file", "{inputs}/binary.csv"],
        "binary.csv",
    ),
    ("predict", "merge", "a run that does not exist", ["merge", "{inputs}/nosuch"], "does not exist"),
    # the other verbs: each fails before it loads or writes anything heavy
    ("verbs", "evaluate", "a model folder that names no dataset", ["evaluate", "{classifier}"], "pass --dataset"),
    (
        "verbs",
        "evaluate",
        "a dataset without the text column",
        ["evaluate", "{classifier}", "--dataset", "{inputs}/labels_only.csv"],
        "--text_column",
    ),
    ("verbs", "evaluate", "a zero batch size", ["evaluate", "{classifier}", "--batch_size", "0"], "--batch_size"),
    ("verbs", "export", "a model folder that names no dataset", ["export", "{classifier}"], "config.yaml"),
    (
        "verbs",
        "export",
        "--output is a file",
        ["export", "{classifier}", "--output", "{inputs}/text.txt"],
        "name a folder",
    ),
    ("verbs", "export", "an unknown format", ["export", "{classifier}", "--format", "tflite"], "--format"),
    ("verbs", "demo", "port 0", ["demo", "{classifier}", "--port", "0"], "--port"),
    ("verbs", "demo", "--share neither true nor false", ["demo", "{classifier}", "--share", "maybe"], "--share"),
    ("verbs", "study", "an unknown task", ["study", "data_efficiency", "nosuch"], "unknown task"),
    (
        "verbs",
        "study",
        "a size twice",
        ["study", "data_efficiency", "sentiment", "--sizes", "100,100"],
        "must not repeat",
    ),
    ("verbs", "study", "a report of a folder with no study", ["study", "report", "{inputs}/a_folder"], "study.json"),
    ("verbs", "search", "an unknown task", ["search", "nosuch"], "unknown task"),
    (
        "verbs",
        "search",
        "a read-only SQLite file",
        ["search", "sentiment", "--storage", "sqlite:///{inputs}/locked.db", "--output_dir", "{runs_root}/search"],
        "cannot write the study database",
    ),
    (
        "verbs",
        "search",
        "a SQLite file in a read-only folder",
        [
            "search",
            "sentiment",
            "--storage",
            "sqlite:///{inputs}/locked/search.db",
            "--output_dir",
            "{runs_root}/search",
        ],
        "cannot write the folder",
    ),
    (
        "verbs",
        "search",
        "--storage names a folder",
        ["search", "sentiment", "--storage", "sqlite:///{inputs}/a_folder", "--output_dir", "{runs_root}/search"],
        "is not a file",
    ),
    (
        "verbs",
        "compare",
        "a folder that is not a finished run",
        ["compare", "{classifier}", "--output", "{runs_root}/cmp"],
        "results.json",
    ),
    ("verbs", "pretrain", "an unknown objective", ["pretrain", "bert"], "mlm or clm"),
    (
        "verbs",
        "pretrain",
        "a corpus file that does not exist",
        ["pretrain", "mlm", "--corpus", "{inputs}/nosuch.txt", "--output_dir", "{inputs}/never"],
        "does not exist",
    ),
    (
        "verbs",
        "pretrain",
        "a corpus of one line",
        ["pretrain", "mlm", "--corpus", "{inputs}/text.txt", "--output_dir", "{inputs}/never"],
        "too few to pretrain on",
    ),
    (
        "verbs",
        "pretrain",
        "--whole_word_mask with clm",
        ["pretrain", "clm", "--whole_word_mask", "true", "--output_dir", "{inputs}/never"],
        "applies to mlm",
    ),
    ("verbs", "clean", "a folder that is not a run", ["clean", "{inputs}/a_folder"], "not a run directory"),
    ("verbs", "clean", "a path that does not exist", ["clean", "{inputs}/nosuch"], "not a folder"),
    (
        "verbs",
        "compare",
        "one run twice",
        ["compare", "{earlier}", "{earlier}", "--output", "{runs_root}/cmp"],
        "twice",
    ),
    (
        "verbs",
        "figures",
        "a run folder with no model",
        ["figures", "--run_dir", "{inputs}/a_folder", "--out", "{runs_root}/figs"],
        "no saved model",
    ),
]
NEEDS_LOCK = {"--output in a read-only folder", "a read-only SQLite file", "a SQLite file in a read-only folder"}


def _fill(arg, inputs, runs, tweets):
    return arg.format(
        inputs=inputs, tweets=tweets, runs_root=runs["earlier"].parent, **{k: str(v) for k, v in runs.items()}
    )


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
    if name in NEEDS_LOCK and (writable(inputs / "locked") or writable(inputs / "locked.db")):
        pytest.skip("cannot make a read-only folder or file here (root without chattr +i support)")
    argv = [_fill(a, inputs, runs, tweets_small_csv) for a in argv]
    before = {"inputs": snapshot(inputs), "runs": snapshot(runs["earlier"].parent)}
    code, err = run_cli(argv, capsys)
    assert_one_line_error(code, err, needle)
    assert {"inputs": snapshot(inputs), "runs": snapshot(runs["earlier"].parent)} == before


def test_the_matrix_covers_every_family_and_verb():
    from finetune import cli
    from finetune.tasks import registry

    assert len(TRAIN) + len(COMMANDS) >= 40
    families = {row[0] for row in TRAIN + COMMANDS}
    assert families == {"data", "config", "images", "predict", "verbs"}
    assert {row[1] for row in TRAIN} == set(MODELS) == set(registry.names())  # train, for each task
    assert {row[1] for row in COMMANDS} == set(cli.VERBS)  # and every other verb `finetune --help` lists


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


def test_predict_reads_a_latin1_and_a_tab_separated_csv_as_training_does(inputs, runs, tmp_path, capsys):
    """Exit 0, not "not UTF-8" or "no column 'text' (columns: text<TAB>label)": the same predictions as from the
    same rows in a plain UTF-8 comma file, and a note on stderr saying what was detected."""

    def predict(path):
        capsys.readouterr()
        assert cli_main(["predict", str(runs["classifier"]), "--file", str(path)]) == 0
        out, err = capsys.readouterr()
        return [json.loads(line) for line in out.splitlines()], err

    plain = tmp_path / "plain.csv"
    plain.write_text("text,label\n" + "".join(f"caf\u00e9 {i},positive\n" for i in range(20)), encoding="utf-8")
    expected, _ = predict(plain)
    got, err = predict(inputs / "latin1.csv")
    assert got == expected and "read as cp1252, not UTF-8" in err
    plain.write_text("text,label\n" + "".join(f"tweet {i},positive\n" for i in range(20)))
    expected, _ = predict(plain)
    got, err = predict(inputs / "tabs.csv")
    assert got == expected and "tab-separated" in err


def cli_main(argv):
    from finetune import cli

    try:
        return cli.main(argv)
    except SystemExit as exit_info:
        return exit_info.code
