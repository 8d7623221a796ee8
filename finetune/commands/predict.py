"""`finetune predict RUN_DIR INPUT ...` or `finetune predict RUN_DIR --file INPUT`: label texts or images with a
saved classifier.

    finetune predict runs/sentiment "worst delay ever" "great crew"          # one JSON line per input
    finetune predict runs/sentiment --file tweets.csv --text_column text --output labels.jsonl --top_k 2
    finetune predict runs/sentiment --file notes.txt                         # one text per line
    cat notes.txt | finetune predict runs/sentiment --file -                 # standard input, one per line
    finetune predict runs/image_classification --file photos/                # a folder of images
    finetune predict runs/question_answering --question "Who won?" --context "..."     # extractive QA
    finetune predict runs/question_answering --file questions.jsonl          # question / context columns

It is `transformers.pipeline` on the run directory (a LoRA adapter merged in memory), fed by a generator and
batched (--batch_size): rows are read, labelled and written as they come, so a file of any length runs in
constant memory. Each output line: {"id", "label", "score"} (+ "top_k": [{"label", "score"}, ...] with --top_k);
"id" is the row number (0-based), the file's `id` column if it has one, or the image's path inside the folder
(cat/0.png). A csv / tsv with one column whose first line is not the --text_column name has no header: every line
is a text, the first included (and the command says so). --output takes the lines of either form.
"""

from __future__ import annotations

import csv
import json
import sys
from collections import deque
from contextlib import contextmanager
from pathlib import Path

from finetune.core.atomic_io import disk_errors, new_temp_dir, write_problem
from finetune.core.errors import CommandParser, UserError, user_errors_exit
from finetune.core.run_directory import writing_into
from finetune.data.images import to_rgb
from finetune.data.sources import DELIMITER_NAMES, detect_encoding, head_lines, other_delimiter
from finetune.tasks.runs import open_run

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
CLASSIFIERS = ("text-classification", "image-classification", "token-classification", "question-answering")
QA_COLUMNS = ("question_column", "context_column")
WRITERS = ("text2text-generation",)  # translation and summarization models: each input gets the text they write


def pipeline_for(run_dir: Path):
    """(pipeline, task) for a saved classifier: full model, LoRA adapter or scratch model."""

    run = open_run(run_dir, kinds=CLASSIFIERS, verb="finetune predict")
    return make_pipeline(run), run.kind.name


def make_pipeline(run):
    from transformers import pipeline

    if run.kind.name in WRITERS:  # transformers 5 has no translation / summarization pipeline any more
        return lambda inputs, batch_size: written(run, inputs, batch_size)
    if run.kind.name == "token-classification":
        return token_pipeline(run.model, run.processor)
    if run.kind.modality == "image":
        return pipeline(run.kind.name, model=run.model, image_processor=run.processor)
    return pipeline(run.kind.name, model=run.model, tokenizer=run.processor)


def predictions(run, classify, inputs, batch_size: int = 32, top_k: int = 1):
    """Yield one (top label, score, [top-k (label, score)]) per input, in order, from any iterable of inputs.

    A token classifier yields its entities (word-level aggregation) instead; a seq2seq model the text it writes."""
    if run.kind.name in ("token-classification", *WRITERS):
        yield from classify(inputs, batch_size=batch_size)
        return
    kwargs = {"top_k": max(1, top_k)}
    if run.kind.modality == "text":  # truncated as in training: longer texts would overflow position embeddings
        kwargs.update(truncation=True, max_length=min(run.max_length, _position_limit(run.model)))
    for output in classify(inputs, batch_size=batch_size, **kwargs):
        ranked = output if isinstance(output, list) else [output]
        yield ranked


def written(run, inputs, batch_size: int):
    """The text a seq2seq model writes for each input, a batch at a time as the inputs come (constant memory),
    decoded as the run's test was (finetune.tasks.runs.Seq2Seq.write)."""
    batch = []
    for text in inputs:
        batch.append(text)
        if len(batch) == batch_size:
            yield from run.kind.write(run, batch, batch_size)
            batch = []
    if batch:
        yield from run.kind.write(run, batch, batch_size)


def _position_limit(model) -> int:
    config = model.config
    return int(getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None) or 512)


# ---- reading inputs as a stream --------------------------------------------------------------------------------


def count_rows(source: str, text_column: str) -> int | None:
    """How many inputs a file holds (for the progress bar), or None for standard input."""
    if source == "-":
        return None
    path = Path(source)
    if path.is_dir():
        return len(_image_files(path))
    return sum(1 for _ in read_rows(source, text_column))


def read_rows(source: str, text_column: str = "text"):
    """Yield (id, input) from a csv / tsv / jsonl / txt file, '-' (standard input, one text per line), or a
    folder of images, one at a time."""
    if source == "-":
        for i, line in enumerate(sys.stdin):
            yield i, line.rstrip("\n")
        return
    path = Path(source)
    if path.is_dir():
        for file in _image_files(path):  # the path inside the folder: cat/0.png and dog/0.png are two images
            yield file.relative_to(path).as_posix(), load_image(str(file))
        return
    if not path.is_file():
        raise UserError(f"input file {path} does not exist: check the path given to --file")
    suffix = path.suffix.lower()
    encoding, delimiter, _ = text_format(path)
    with _readable(path, encoding) as f:
        if suffix in (".csv", ".tsv"):
            if headerless(path, text_column, encoding, delimiter) is not None:
                # blank lines skipped, as DictReader does
                rows = (row for row in csv.reader(f, delimiter=delimiter) if row)
                yield from ((i, row[0]) for i, row in enumerate(rows))
                return
            reader = csv.DictReader(f, delimiter=delimiter)
            if text_column not in (reader.fieldnames or []):
                raise UserError(
                    f"{path} has no column {text_column!r} (columns: {', '.join(reader.fieldnames or [])}): "
                    f"pass --text_column NAME"
                )
            for i, row in enumerate(reader):
                yield row.get("id") or i, row[text_column] or ""
        elif suffix in (".jsonl", ".json"):
            for i, line in enumerate(f):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError as err:
                    raise UserError(f"{path} line {i + 1} is not JSON ({err}): one JSON object per line") from None
                if not isinstance(row, dict) or text_column not in row:
                    raise UserError(f"{path} line {i + 1} has no {text_column!r} field: pass --text_column NAME")
                yield row.get("id", i), str(row[text_column])
        elif suffix == ".txt":
            for i, line in enumerate(f):
                yield i, line.rstrip("\n")
        else:
            raise UserError(
                f"{path}: unsupported file type {suffix!r}; use .csv, .tsv, .jsonl, .txt, a folder of "
                f"images, or - for standard input"
            )


def headerless(path: Path, text_column: str, encoding: str = "utf-8", delimiter: str | None = None) -> str | None:
    """The first line of a csv / tsv of one column whose first line is not `text_column`, else None. Such a file is
    a plain list of texts: read with its first line as the header, that text would be lost (and the column
    "missing")."""
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".tsv"):
        return None
    delimiter = delimiter or ("\t" if suffix == ".tsv" else ",")
    with _readable(path, encoding) as f:
        first = next((row for row in csv.reader(f, delimiter=delimiter) if row), None)
    return first[0] if first is not None and len(first) == 1 and first[0] != text_column else None


def text_format(path: Path) -> tuple[str, str, list]:
    """(encoding, csv delimiter, notes on what was detected) of an input file, found as training finds them
    (finetune.data.sources): a latin-1 / cp1252 file, a .csv that is really tab-separated."""

    try:
        encoding, notes = detect_encoding(path)
    except OSError as err:
        raise UserError(f"cannot read {path} ({err.strerror}): check its permissions") from None
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    if path.suffix.lower() == ".csv":
        found = other_delimiter(head_lines(path, encoding))
        if found:
            delimiter = found
            notes.append(f"{DELIMITER_NAMES[found]}, not comma-separated: detected from its lines")
    return encoding, delimiter, notes


@contextmanager
def _readable(path: Path, encoding: str = "utf-8"):
    try:
        f = open(path, encoding=encoding, newline="")
    except OSError as err:
        raise UserError(f"cannot read {path} ({err.strerror}): check its permissions") from None
    try:
        yield f
    except UnicodeDecodeError as err:
        raise UserError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start}): save it as UTF-8") from None
    finally:
        f.close()


def _image_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UserError(
            f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {folder}: pass a folder of images or a text file"
        )
    return files


def token_pipeline(model, tokenizer=None):
    """A tagger that groups sub-tokens into words (each word takes its first piece's tag, as in training) and
    words into entities."""
    from transformers import pipeline

    return pipeline("token-classification", model=model, tokenizer=tokenizer, aggregation_strategy="first")


def entity_spans(text: str, entities: list[dict]) -> dict:
    """One input's entities as spans of the text: type, the words, character offsets, the mean word score."""
    return {
        "input": text,
        "entities": [
            {
                "type": e["entity_group"],
                "text": text[e["start"] : e["end"]],
                "start": int(e["start"]),
                "end": int(e["end"]),
                "score": round(float(e["score"]), 4),
            }
            for e in entities
        ],
    }


def load_image(path: str):
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if p.is_dir():
        raise UserError(f"{p} is a folder, not an image file: pass the image files themselves (e.g. {p}/*.png)")
    if not p.is_file():
        raise UserError(f"image {p} does not exist: check the path")
    try:
        with Image.open(p) as image:
            image.load()
            return to_rgb(image)  # grayscale / RGBA / palette images become RGB exactly as in training
    except Image.DecompressionBombError as err:  # not an OSError: PIL refuses images this large for safety
        raise UserError(f"{p} is too large to open safely ({str(err).split('.')[0]}): resize it first") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise UserError(
            f"{p} is not a readable image ({str(err) or type(err).__name__}): pass a PNG or JPEG file"
        ) from None


# ---- the command -----------------------------------------------------------------------------------------------


def predict_file(
    run, source: str, out, text_column: str = "text", batch_size: int = 32, top_k: int = 1, progress: bool = True
) -> int:
    """Label every row of `source`, writing one JSON line per row to `out` as it goes; returns the row count."""
    from tqdm.auto import tqdm

    if run.kind.modality == "image" and source != "-" and not Path(source).is_dir():
        raise UserError(f"{run.path} is an image classifier: --file takes a folder of images, not {source}")
    if run.kind.modality == "text" and source != "-" and Path(source).is_dir():
        raise UserError(f"{source} is a folder; {run.path} is a text classifier: pass a .csv, .jsonl or .txt file")
    if source != "-" and Path(source).is_file():
        for note in text_format(Path(source))[2]:
            print(f"note: {source}: {note}", file=sys.stderr)
    total = count_rows(source, text_column)  # a first pass that also checks the file before anything is written
    first = headerless(Path(source), text_column, *text_format(Path(source))[:2]) if source != "-" else None
    if first is not None:
        print(
            f"note: {source} has one column and its first line is not {text_column!r}: read as texts without a "
            f"header, the first line included (if {first[:40]!r} is a header, pass --text_column {first[:40]!r})",
            file=sys.stderr,
        )
    ids = deque()  # ids wait here for their predictions (a batch or two ahead at most); nothing else is kept

    def inputs():
        for row_id, value in read_rows(source, text_column):
            ids.append((row_id, value))
            # stdin: paths
            yield (load_image(value) if run.kind.modality == "image" and isinstance(value, str) else value)

    classify = make_pipeline(run)
    count = 0
    bar = tqdm(total=total, desc="predict", unit="row", disable=not progress, file=sys.stderr)
    for ranked in predictions(run, classify, inputs(), batch_size, top_k):
        row_id, value = ids.popleft()
        out.write(json.dumps(_line(row_id, ranked, top_k, value if isinstance(value, str) else None)) + "\n")
        count += 1
        bar.update()
    bar.close()
    return count


def _line(row_id, ranked, top_k: int, text: str | None = None) -> dict:
    if isinstance(ranked, str):  # a seq2seq model's output text
        return {"id": row_id, "output": ranked}
    if not ranked or "entity_group" in ranked[0]:  # a token classifier: its entities as spans of the text
        return {"id": row_id, **{k: v for k, v in entity_spans(text or "", ranked).items() if k != "input"}}
    line = {"id": row_id, "label": ranked[0]["label"], "score": round(float(ranked[0]["score"]), 6)}
    if top_k > 1:
        line["top_k"] = [{"label": r["label"], "score": round(float(r["score"]), 6)} for r in ranked]
    return line


def answer_line(answer: dict, version_2: bool) -> dict:
    """One answer as a JSON line's fields: the text, its n-best probability, its character offsets in the context
    (end exclusive; -1 for "no answer"), and on SQuAD 2.0-style runs the no-answer probability."""
    line = {
        "answer": answer["text"],
        "score": round(float(answer["probability"]), 6),
        "start": answer["start"],
        "end": answer["end"],
    }
    if version_2:
        line["no_answer_probability"] = round(float(answer["no_answer_probability"]), 6)
    return line


def read_pairs(source: str, question_column: str, context_column: str):
    """Yield (id, question, context) from a jsonl / csv / tsv file, one row at a time."""
    path = Path(source)
    if source == "-" or not path.is_file():
        raise UserError(f"input file {source} does not exist: pass a .jsonl or .csv file with question/context columns")
    suffix = path.suffix.lower()
    encoding, delimiter, _ = text_format(path)
    with _readable(path, encoding) as f:
        if suffix in (".jsonl", ".json"):
            rows = ((i, json.loads(line)) for i, line in enumerate(f) if line.strip())
        elif suffix in (".csv", ".tsv"):
            rows = enumerate(csv.DictReader(f, delimiter=delimiter))
        else:
            raise UserError(f"{path}: unsupported file type {suffix!r} for questions; use .jsonl, .csv or .tsv")
        try:
            for i, row in rows:
                missing = [c for c in (question_column, context_column) if not isinstance(row, dict) or c not in row]
                if missing:
                    flag = "question_column" if missing[0] == question_column else "context_column"
                    raise UserError(f"{path} row {i + 1} has no {missing[0]!r} field: pass --{flag} NAME")
                yield row.get("id", i), str(row[question_column]), str(row[context_column])
        except ValueError as err:
            raise UserError(f"{path} has a line that is not JSON ({err}): one JSON object per line") from None


def predict_questions(run, rows, out, batch_size: int = 32, key: str = "id") -> int:
    """Answer (id, question, context) rows a batch at a time, one JSON line each into `out`; returns the count."""
    version_2 = bool(run.results.get("version_2"))
    count, chunk = 0, []

    def flush():
        answers = run.kind.answer(run, [q for _, q, _ in chunk], [c for _, _, c in chunk], batch_size)
        for (row_id, question, _), answer in zip(chunk, answers):
            out.write(json.dumps({key: row_id if key == "id" else question, **answer_line(answer, version_2)}) + "\n")
        chunk.clear()

    for row in rows:
        chunk.append(row)
        count += 1
        if len(chunk) == batch_size:
            flush()
    if chunk:
        flush()
    return count


def main(argv=None) -> int:
    parser = CommandParser(prog="finetune predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a run directory (or its scratch/ or merged/ folder)")
    parser.add_argument("inputs", nargs="*", help="texts, or image files for an image model")
    parser.add_argument(
        "--file", default=None, help="csv / tsv / jsonl / txt file, a folder of images, or - (standard input)"
    )
    parser.add_argument("--text_column", default="text", help="the column (csv) or field (jsonl) holding the text")
    parser.add_argument("--output", type=Path, default=None, help="write JSON lines here (default: standard output)")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--top_k", type=int, default=1, help="also list the k most likely labels")
    parser.add_argument("--question", default=None, help="question answering: the question (with --context)")
    parser.add_argument("--context", default=None, help="question answering: the text that holds the answer")
    parser.add_argument("--question_column", default="question", help="question answering --file: the question")
    parser.add_argument("--context_column", default="context", help="question answering --file: the context")
    with user_errors_exit():
        args = parser.parse_args(argv)
        asked = args.question is not None or args.context is not None
        if asked and (args.question is None or args.context is None):
            raise UserError("give both --question and --context (or --file with question/context columns)")
        if asked and (args.inputs or args.file):
            raise UserError("give --question with --context, or --file: not both, and no other inputs")
        if not asked and bool(args.inputs) == bool(args.file):
            raise UserError(
                "give inputs on the command line or --file INPUT (one of the two): see finetune predict --help"
            )
        if args.batch_size < 1 or args.top_k < 1:
            raise UserError(f"--batch_size and --top_k must be at least 1, got {args.batch_size} and {args.top_k}")
        if args.output is not None:
            check_output(args.output)  # before the model loads: a wrong --output costs no wait

        run = open_run(args.run_dir, kinds=CLASSIFIERS + WRITERS, verb="finetune predict")
        qa = run.kind.name == "question-answering"
        if qa and args.inputs:
            raise UserError(
                f"{run.path} answers questions: pass --question QUESTION --context TEXT, or --file with "
                "question/context columns"
            )
        if asked and not qa:
            raise UserError(f"{run.path} holds a {run.kind.name} model: --question/--context are for QA runs")

        def predict_into(out) -> int:  # the arguments or the file, into standard output or --output alike
            if qa and args.file is None:
                return predict_questions(run, [(None, args.question, args.context)], out, key="question")
            if qa:  # a first pass checks every row before anything is written
                sum(1 for _ in read_pairs(args.file, args.question_column, args.context_column))
                rows = read_pairs(args.file, args.question_column, args.context_column)
                return predict_questions(run, rows, out, args.batch_size)
            if args.file is None:
                return predict_arguments(run, args.inputs, args.batch_size, args.top_k, out)
            return predict_file(run, args.file, out, args.text_column, args.batch_size, args.top_k)

        if args.output is None:
            predict_into(sys.stdout)
            return 0

        # Streamed into a temporary file beside the output, renamed into place when complete; in a run directory
        # under the run's lock, and recorded in its manifest (finetune/core/run_directory.py: writing_into).
        with writing_into(args.output, "finetune predict --output"):
            tmp = new_temp_dir(args.output)
            try:
                with disk_errors(args.output.name, args.output.parent), open(tmp / args.output.name, "w") as out:
                    count = predict_into(out)
                (tmp / args.output.name).replace(args.output)
            finally:
                import shutil

                shutil.rmtree(tmp, ignore_errors=True)
        print(f"wrote {count} predictions to {args.output}", file=sys.stderr)
    return 0


def check_output(path: Path) -> None:
    """--output names a file in a folder this process can write (or can create): probed with a temporary file in
    the nearest folder that exists, so a read-only place is one line, not a traceback from mkdtemp."""
    import tempfile

    if path.is_dir():
        raise UserError(f"--output {path} is a folder: name a file, e.g. {path / 'predictions.jsonl'}")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as err:
        reason = write_problem(err, folder) or err.strerror or type(err).__name__
        raise UserError(
            f"--output {path}: cannot write in {folder} ({reason}): choose a writable place for --output"
        ) from None


def predict_arguments(run, inputs: list[str], batch_size: int, top_k: int, out=None) -> int:
    """One JSON line per input ({"input", "label", "score"}) into `out` (standard output by default); returns the
    count."""
    out = out or sys.stdout
    if run.kind.modality == "text":
        empty = [i + 1 for i, text in enumerate(inputs) if not text.strip()]
        if empty:
            raise UserError(
                f'input {empty[0]} is empty: pass the text to classify, e.g. finetune predict RUN_DIR "what a flight"'
            )
    values = [load_image(p) for p in inputs] if run.kind.modality == "image" else inputs
    classify = make_pipeline(run)
    for text, ranked in zip(inputs, predictions(run, classify, values, batch_size, top_k)):
        line = _line(None, ranked, top_k, text)
        line.pop("id")
        out.write(json.dumps({"input": text, **line}) + "\n")
    return len(inputs)


if __name__ == "__main__":
    raise SystemExit(main())
