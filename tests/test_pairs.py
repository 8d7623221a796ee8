"""Sequence-to-sequence pairs (finetune/data/pairs.py): every shape on files the tests write, the bad inputs (one
line each, a UserError), the known Hub datasets' settings, and the two packaged defaults."""

import json
import shutil

import pytest

from finetune.core.errors import UserError
from finetune.data import bible, pairs
from finetune.data.pairs import load_pairs

# Real sentence pairs: early-modern English and modern English (Genesis 1:1-3, John 3:16), varied by number.
KJV = ["In the beginning God created the heaven and the earth", "God so loved the world", "Let there be light"]
WEB = ["In the beginning, God created the heavens and the earth", "God loved the world so much", "Let there be light"]


def rows(n=30):
    return [(f"{KJV[i % 3]} ({i}).", f"{WEB[i % 3]} ({i}).") for i in range(n)]


def write_translation_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def write_table(path, header, data):
    """A two-column table as csv / tsv / jsonl / parquet, by the file's extension."""
    import pandas as pd

    frame = pd.DataFrame(data, columns=header)
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    elif path.suffix == ".tsv":
        frame.to_csv(path, sep="\t", index=False)
    elif path.suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_parquet(path)
    return path


def all_rows(data):
    return {(r["source"], r["target"]) for split in data.splits.values() for r in split}


def one_line_error(excinfo, *words):
    message = str(excinfo.value)
    assert "\n" not in message and all(word in message for word in words), message


# ---- shapes ---------------------------------------------------------------------------------------------------


def test_run_translation_json_lines(tmp_path):
    records = [{"id": i, "translation": {"en": s, "fr": t}} for i, (s, t) in enumerate(rows())]
    path = write_translation_jsonl(tmp_path / "pairs.jsonl", records)
    data = load_pairs(str(path), task="translation", seed=0, source_lang="en", target_lang="fr")
    assert list(data.splits) == ["train", "validation", "test"]
    assert sum(len(s) for s in data.splits.values()) == 30 and all_rows(data) == set(rows())
    assert (data.source_name, data.target_name) == ("en", "fr")
    row = data.splits["test"][0]
    assert set(row) == {"source", "target", "id"} and rows()[int(row["id"])] == (row["source"], row["target"])
    assert data.provenance.kind == "local" and str(path) in data.provenance.note
    assert any("validation split carved from train" in note and "seed 0" in note for note in data.notes)
    # the other direction is the same data read the other way
    back = load_pairs(str(path), task="translation", seed=0, source_lang="fr", target_lang="en")
    assert all_rows(back) == {(t, s) for s, t in rows()}


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_two_columns_every_format(tmp_path, suffix):
    path = write_table(tmp_path / f"kjv{suffix}", ["kjv", "web"], rows())
    data = load_pairs(str(path), task="translation", seed=1, source_column="kjv", target_column="web")
    assert all_rows(data) == set(rows()) and (data.source_name, data.target_name) == ("kjv", "web")
    assert data.splits["train"].column_names == ["source", "target"]


def test_summarization_columns_default_and_flags(tmp_path):
    """--text_column / --summary_column map to the same parameters; text / summary when none is named."""
    path = write_table(tmp_path / "news.csv", ["id", "text", "summary"], [(i, s, t) for i, (s, t) in enumerate(rows())])
    data = load_pairs(str(path), task="summarization", seed=0)
    assert all_rows(data) == set(rows()) and data.splits["train"].column_names == ["source", "target", "id"]
    assert data.splits["train"].features["id"].dtype == "string"
    named = write_table(tmp_path / "news.tsv", ["article", "headline"], rows())
    data = load_pairs(str(named), task="summarization", seed=0, source_column="article", target_column="headline")
    assert all_rows(data) == set(rows()) and data.target_name == "headline"


def test_a_folder_with_its_own_splits_is_kept(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    for name, part in (("train", rows()[:20]), ("validation", rows()[20:25]), ("test", rows()[25:])):
        write_table(folder / f"{name}.jsonl", ["source", "target"], part)
    data = load_pairs(str(folder), task="translation", seed=0)
    assert {name: len(split) for name, split in data.splits.items()} == {"train": 20, "validation": 5, "test": 5}
    assert not any("carved" in note for note in data.notes)


def test_known_hub_datasets_get_their_settings(monkeypatch):
    """Offline, the Hub is out of reach: the loader is handed what `datasets` would return, and the test checks the
    configuration asked for and the columns read."""
    from datasets import Dataset, DatasetDict

    asked = {}

    def fake_load_any(name, packaged, config=None):
        asked[name] = config
        if name.endswith("wmt16"):
            split = Dataset.from_dict({"translation": [{"ro": f"Salut {i}", "en": f"Hello {i}"} for i in range(30)]})
        else:
            split = Dataset.from_dict({"id": [str(i) for i in range(30)], "article": [f"Long {i}" for i in range(30)]})
            split = split.add_column("highlights", [f"Short {i}" for i in range(30)])
        return DatasetDict({"train": split}), pairs.Provenance("hub", f"Hugging Face Hub dataset {name} ({config})")

    monkeypatch.setattr(pairs, "load_any", fake_load_any)
    wmt = load_pairs("wmt/wmt16", task="translation", seed=0)
    assert asked["wmt/wmt16"] == "ro-en" and (wmt.source_name, wmt.target_name) == ("en", "ro")
    assert ("Hello 1", "Salut 1") in all_rows(wmt) and "configuration ro-en, en -> ro" in wmt.notes[0]
    with pytest.raises(UserError) as excinfo:  # another language pair of wmt16: the direction must be named
        load_pairs("wmt16", task="translation", seed=0, dataset_config="de-en")
    one_line_error(excinfo, "--source_lang", "en, ro")
    cnn = load_pairs("cnn_dailymail", task="summarization", seed=0)
    assert asked["cnn_dailymail"] == "3.0.0" and ("Long 2", "Short 2") in all_rows(cnn)
    assert "columns article -> highlights" in cnn.notes[0]
    assert set(pairs.KNOWN_HUB) == {"wmt16", "opus_books", "cnn_dailymail", "xsum", "samsum"}


# ---- bad input: one line each, naming the fix -----------------------------------------------------------------


def test_translation_record_missing_a_language(tmp_path):
    records = [{"translation": {"en": s, "fr": t}} for s, t in rows()]
    records[6] = {"translation": {"en": "Let there be light.", "de": "Es werde Licht."}}
    path = write_translation_jsonl(tmp_path / "broken.jsonl", records)
    with pytest.raises(UserError) as excinfo:
        load_pairs(str(path), task="translation", seed=0, source_lang="en", target_lang="fr")
    one_line_error(excinfo, "row 7", "no 'fr'", "keys: en, de", "remove that row")


def test_unknown_or_unnamed_language(tmp_path):
    path = write_translation_jsonl(tmp_path / "p.jsonl", [{"translation": {"en": s, "fr": t}} for s, t in rows()])
    with pytest.raises(UserError) as excinfo:
        load_pairs(str(path), task="translation", seed=0, source_lang="en", target_lang="ro")
    one_line_error(excinfo, "--target_lang 'ro'", "en, fr")
    with pytest.raises(UserError) as excinfo:
        load_pairs(str(path), task="translation", seed=0)
    one_line_error(excinfo, "--source_lang", "--target_lang", "en, fr")


def test_missing_column_names_the_columns(tmp_path):
    path = write_table(tmp_path / "t.csv", ["kjv", "web"], rows())
    with pytest.raises(UserError) as excinfo:
        load_pairs(str(path), task="summarization", seed=0, source_column="kjv")
    one_line_error(excinfo, "no column 'summary'", "columns: kjv, web", "--summary_column")
    with pytest.raises(UserError) as excinfo:
        load_pairs(str(path), task="translation", seed=0, source_lang="en", target_lang="fr")
    one_line_error(excinfo, "has none", "kjv, web", "--source_column")
    with pytest.raises(UserError) as excinfo:
        load_pairs(str(path), task="translation", seed=0, source_column="kjv", target_column="kjv")
    one_line_error(excinfo, "both name the column 'kjv'")


def test_empty_targets_dropped_and_counted_or_refused(tmp_path):
    data = [(s, "" if i in (4, 9, 17) else t) for i, (s, t) in enumerate(rows())]
    path = write_table(tmp_path / "gaps.jsonl", ["source", "target"], data)
    loaded = load_pairs(str(path), task="translation", seed=0)
    assert sum(len(s) for s in loaded.splits.values()) == 27
    assert any("dropped 3 of 30 train rows with an empty target text (first: row 5)" in n for n in loaded.notes)
    empty = write_table(tmp_path / "empty.jsonl", ["source", "target"], [(s, " ") for s, _ in rows()])
    with pytest.raises(UserError) as excinfo:
        load_pairs(str(empty), task="translation", seed=0)
    one_line_error(excinfo, "all 30 target texts", "empty")


# ---- the packaged defaults ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def headlines_data():
    return load_pairs("conll-headlines", task="summarization", seed=0)


def test_conll_headlines(headlines_data):
    data = headlines_data
    assert {name: len(split) for name, split in data.splits.items()} == {"train": 946, "validation": 216, "test": 231}
    first = data.splits["train"][0]
    assert first["target"] == "EU rejects German call to boycott British lamb"
    assert first["source"].startswith("The European Commission said on Thursday it disagreed with German advice")
    assert "Germany's representative" in first["source"]  # detokenized: no space before 's
    sources = data.splits["train"]["source"]
    assert not any(" ," in s or " 's " in s or " n't" in s for s in sources)
    assert sum(s.count('"') % 2 for s in sources) < 20  # quotes come in pairs, hugging what they quote
    assert "SOCCER - JAPAN GET LUCKY WIN, CHINA IN SURPRISE DEFEAT" in data.splits["test"]["target"]
    assert data.provenance.kind == "packaged" and (data.source_name, data.target_name) == ("article", "headline")
    for words in ("Reuters", "research use", "ALL CAPS", "946 / 216 / 231"):
        assert words in data.provenance.note


def test_packaged_corpus_refuses_column_flags():
    with pytest.raises(UserError) as excinfo:
        load_pairs("conll-headlines", task="summarization", seed=0, source_column="text")
    one_line_error(excinfo, "fixed columns")


needs_diatheke = pytest.mark.skipif(
    shutil.which("diatheke") is None, reason="diatheke and the SWORD KJV / WEB modules: run `make system`"
)


@needs_diatheke
def test_kjv_web_split_by_book():
    data = load_pairs("kjv-web", task="translation", seed=0)
    sizes = {name: len(split) for name, split in data.splits.items()}
    assert 31_000 < sum(sizes.values()) <= 31_102 and sizes["test"] > 2_000 and sizes["validation"] > 800

    def books(split):
        return {verse_id.rsplit(" ", 1)[0] for verse_id in data.splits[split]["id"]}

    assert books("test") == set(bible.TEST_BOOKS) and books("validation") == set(bible.VALIDATION_BOOKS)
    assert not books("train") & (set(bible.TEST_BOOKS) | set(bible.VALIDATION_BOOKS))
    assert len(books("train")) == 66 - len(bible.TEST_BOOKS) - len(bible.VALIDATION_BOOKS)
    verses = dict(zip(data.splits["train"]["id"], zip(data.splits["train"]["source"], data.splits["train"]["target"])))
    kjv, web = verses["John 3:16"]
    assert kjv.startswith("For God so loved the world, that he gave his only begotten Son")
    assert "only born Son, that whoever believes" in web  # diatheke's -f plain writes "bornSon"
    assert verses["Genesis 1:1"][1] == "In the beginning, God created the heavens and the earth."  # not "Godcreated"
    assert len(verses["Revelation of John 22:21"][1]) < 100  # WEB's glossary after the last verse is left out
    texts = list(data.splits["train"]["source"]) + list(data.splits["train"]["target"])
    assert not any(mark in text for text in texts for mark in ("<", ">", "¶", "  "))
    assert data.provenance.kind == "packaged" and (data.source_name, data.target_name) == ("KJV", "WEB")
    for words in ("public domain", "sword-text-kjv", "diatheke", "test Joshua, Proverbs", "split by book"):
        assert words in data.provenance.note


def test_kjv_web_without_diatheke_names_make_system(monkeypatch, tmp_path):
    monkeypatch.setenv("FINETUNE_CACHE", str(tmp_path))  # no aligned cache to fall back on
    monkeypatch.setattr(bible.shutil, "which", lambda name: None)
    with pytest.raises(UserError) as excinfo:
        load_pairs("kjv-web", task="translation", seed=0)
    one_line_error(excinfo, "diatheke", "make system")


def test_strip_markup_keeps_word_boundaries():
    """The module markup diatheke prints, word boundaries and all (real lines of the two modules)."""
    web = '<w savlm="strong:G3439">only</w> born</q><q marker=""><w savlm="strong:G5207">Son</w>, that'
    assert bible.strip_markup(web) == "only born Son, that"
    assert bible.strip_markup("<w>God</w><w>created</w> the") == "God created the"
    assert bible.strip_markup("of <w>Yahweh</w>,<w>Yahweh</w> spoke") == "of Yahweh, Yahweh spoke"
    assert bible.strip_markup("said, “<w>Let</w> there") == "said, “Let there"
    kjv = '<q marker="">¶ <w savlm="strong:G1063">For</w> <w>shall more be give</w>n.</q>'
    assert bible.strip_markup(kjv) == "For shall more be given."
    assert bible.strip_markup('<title type="psalm">A Psalm of David.</title> LORD, how') == "LORD, how"
