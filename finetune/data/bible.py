"""The translation default: the King James Bible (1769 text) -> the World English Bible (2015), verse by verse.

Early-modern English to modern English: both public domain, both in Debian (`sword-text-kjv`, `sword-text-web`,
installed by `make system`), read with Debian's `diatheke` (the SWORD project's command-line reader; no GPL code
is imported). Verses are aligned by their book / chapter / verse key and split BY BOOK, so that no verse of a
validation or test book is seen in training (verses of one book share names, phrasing and formulas: a random
split would leak them).

diatheke's own plain output joins some words of the WEB module ("his only bornSon", John 3:16; "Godcreated",
Genesis 1:1): the module's markup has no space where one element ends and the next begins. So the module's raw
markup (`-f internal`) is read and stripped here, by one rule (`strip_markup`).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

from finetune.core.atomic_io import atomic_write_json
from finetune.core.environment import cache_dir
from finetune.core.errors import UserError

KJV_MODULE, WEB_MODULE = "engKJV2006eb", "engWEB2015eb"
CACHE_VERSION = "3"  # bump when what the aligned cache holds changes (the parser, the book list)

# The 66 books of the Protestant canon as diatheke names them (its English locale), in order.
BOOKS = (
    "Genesis", "Exodus", "Leviticus", "Numbers", "Deuteronomy", "Joshua", "Judges", "Ruth", "I Samuel",
    "II Samuel", "I Kings", "II Kings", "I Chronicles", "II Chronicles", "Ezra", "Nehemiah", "Esther", "Job",
    "Psalms", "Proverbs", "Ecclesiastes", "Song of Solomon", "Isaiah", "Jeremiah", "Lamentations", "Ezekiel",
    "Daniel", "Hosea", "Joel", "Amos", "Obadiah", "Jonah", "Micah", "Nahum", "Habakkuk", "Zephaniah", "Haggai",
    "Zechariah", "Malachi", "Matthew", "Mark", "Luke", "John", "Acts", "Romans", "I Corinthians",
    "II Corinthians", "Galatians", "Ephesians", "Philippians", "Colossians", "I Thessalonians",
    "II Thessalonians", "I Timothy", "II Timothy", "Titus", "Philemon", "Hebrews", "James", "I Peter", "II Peter",
    "I John", "II John", "III John", "Jude", "Revelation of John",
)  # fmt: skip

# Held-out books, spread over both testaments and their genres (law/history, wisdom/poetry, prophets, gospels,
# letters, apocalyptic), about 9% (test) and 3% (validation) of the verses; every other book is training.
TEST_BOOKS = ("Joshua", "Proverbs", "Daniel", "Mark", "Galatians", "James")
VALIDATION_BOOKS = ("Ruth", "Ecclesiastes", "Amos", "Jonah", "Philippians", "Hebrews", "I John")


def split_of(book: str) -> str:
    return "test" if book in TEST_BOOKS else "validation" if book in VALIDATION_BOOKS else "train"


# ---- reading a module ---------------------------------------------------------------------------------------

# Elements whose content is not verse text: headings (and the Psalms' titles, which the two translations place
# differently), footnotes, cross-references, the speaker names of the Song of Solomon.
_DROPPED = re.compile(r"<(title|note|speaker|reference)\b[^>]*?(?<!/)>.*?</\1>", re.S)
_TAGS = re.compile(r"([\w,;:.?!”’)]?)((?:<[^>]*>)+)(?=(\w*))")
_SUFFIXES = {"s", "t", "d", "m", "ll", "re", "ve"}  # day’<w>s</w>: a possessive or a contraction, not a new word
_BOOK_END = re.compile(r'<div\b(?=[^>]*\beID=)(?=[^>]*\btype="book")[^>]*>')
_OPENING = re.compile(r"<[A-Za-z][^>]*?(?<!/)>")


def strip_markup(text: str) -> str:
    """A verse's OSIS markup -> its words, each word boundary kept.

    A run of tags before a letter is a word boundary when it opens an element and follows a letter or closing
    punctuation (WEB's `born</q><q><w>Son`, `God</w><w>created`, `Yahweh,<w>Yahweh`, `sacrifice,’<w>for`): a new
    element starts a new word. A run that only closes one is not (KJV's `<w>give</w>n`, a word tagged in part), nor
    one after an opening quote or bracket or WEB's unspaced dash (`“<w>Let`, `ground—<w>man`), nor an
    apostrophe's `s` (KJV's `<w>day</w>’<w>s</w>`). Pilcrows (paragraph marks) go; spaces are collapsed.
    """
    text = _DROPPED.sub(" ", text)

    def boundary(match):
        before, tags, after = match.group(1), match.group(2), match.group(3)
        suffix = before == "’" and after in _SUFFIXES
        return before + (" " if before and after and not suffix and _OPENING.search(tags) else "")

    text = _TAGS.sub(boundary, text)
    text = text.replace("¶", " ")
    for entity, char in (("&lt;", "<"), ("&gt;", ">"), ("&quot;", '"'), ("&amp;", "&")):
        text = text.replace(entity, char)
    return " ".join(text.split())


def parse_output(output: str) -> dict[tuple[str, int, int], str]:
    """diatheke's `-f internal` output -> {(book, chapter, verse): text}.

    Each verse starts a line with its key (`John 3:16: `), after any pre-verse markup (a Psalm's title, a book's
    opening milestone); a line without a key continues the verse before it; the last line names the module.
    """
    books = "|".join(re.escape(book) for book in BOOKS)
    key = re.compile(rf"(?:^|>)\s*({books}) (\d+):(\d+): ?")
    verses: dict[tuple[str, int, int], list[str]] = {}
    current = None
    for line in output.splitlines():
        match = key.search(line)
        if match:
            current = (match.group(1), int(match.group(2)), int(match.group(3)))
            verses[current] = [line[match.end() :]]
        elif current is not None and not re.fullmatch(r"\(\w+\)", line.strip()):
            verses[current].append(line)
    # Whatever follows a book's closing milestone is not verse text (WEB appends its glossary to Revelation 22:21).
    return {k: strip_markup(_BOOK_END.split(" ".join(parts))[0]) for k, parts in verses.items()}


def read_modules(*modules: str) -> list[dict[tuple[str, int, int], str]]:
    """{(book, chapter, verse): text} of the 66 books, for each module: one diatheke call per module for the whole
    canon (its start-up costs about 0.1 s of CPU, so a call per book would triple the work), the calls side by
    side in two processes."""
    program = shutil.which("diatheke")
    if program is None:
        raise UserError(
            "the kjv-web corpus is read with Debian's `diatheke`, which is not installed: run `make system` "
            "(apt-get install diatheke sword-text-kjv sword-text-web), or pass --dataset with your own pairs"
        )
    span = f"{BOOKS[0]} 1:1 - {BOOKS[-1]} 22:21"
    processes = [
        subprocess.Popen(
            [program, "-b", module, "-f", "internal", "-k", span],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for module in modules
    ]
    out = []
    for module, process in zip(modules, processes):
        stdout, stderr = process.communicate(timeout=600)
        verses = parse_output(stdout) if process.returncode == 0 else {}
        found = {book for book, _, _ in verses}
        if len(found) < len(BOOKS):
            raise UserError(
                f"diatheke read {len(found)} of the {len(BOOKS)} books from the SWORD module {module} "
                f"({(stderr or stdout).strip()[:80]!r}): install the module's Debian package with `make system` "
                f"(sword-text-kjv, sword-text-web)"
            )
        out.append(verses)
    return out


# ---- aligned, cached ----------------------------------------------------------------------------------------


def module_version(module: str) -> str:
    """The module's Version= from its SWORD .conf (part of the cache key: a new Debian package re-aligns)."""
    for folder in (Path("/usr/share/sword/mods.d"), Path.home() / ".sword" / "mods.d"):
        conf = next((c for c in (folder / f"{module}.conf", folder / f"{module.lower()}.conf") if c.is_file()), None)
        if conf is not None:
            match = re.search(r"^Version=(.+)$", conf.read_text(errors="replace"), re.M)
            return match.group(1).strip() if match else "unknown"
    return "unknown"


def cache_path() -> Path:
    versions = f"{module_version(KJV_MODULE)}-{module_version(WEB_MODULE)}"
    return cache_dir() / "pairs" / f"kjv-web-v{CACHE_VERSION}-{versions}.json"


def aligned_verses() -> tuple[list[dict], dict]:
    """([{"id": "John 3:16", "book", "source": KJV, "target": WEB}, ...] in canonical order, counts), computed once
    (two diatheke calls, about 12 s of CPU) and read back from the cache afterwards."""
    path = cache_path()
    if path.is_file():
        try:
            cached = json.loads(path.read_text())
            return cached["verses"], cached["counts"]
        except (ValueError, KeyError):  # a damaged cache entry is only a cache: align again
            pass
    kjv, web = read_modules(KJV_MODULE, WEB_MODULE)
    verses = [
        {"id": f"{book} {c}:{v}", "book": book, "source": text, "target": web[(book, c, v)]}
        for (book, c, v), text in kjv.items()
        if text and web.get((book, c, v))
    ]
    counts = {"kjv": len(kjv), "web": sum(1 for key in kjv if key in web), "aligned": len(verses)}
    try:
        atomic_write_json(path, {"verses": verses, "counts": counts})
        for stale in path.parent.glob("kjv-web-v*.json"):  # earlier parsers' or packages' alignments (11 MB each)
            if stale != path:
                stale.unlink(missing_ok=True)
    except OSError:  # an unwritable cache only costs aligning again next time
        pass
    return verses, counts


def packaged_kjv_web():
    """The packaged translation default: (DatasetDict train / validation / test of source / target / id, note)."""
    from datasets import Dataset, DatasetDict

    verses, counts = aligned_verses()
    splits = {name: {"source": [], "target": [], "id": []} for name in ("train", "validation", "test")}
    for verse in verses:
        split = splits[split_of(verse["book"])]
        for column in ("source", "target", "id"):
            split[column].append(verse[column])
    unaligned = counts["kjv"] - counts["aligned"]
    note = (
        f"packaged King James Bible -> World English Bible, {counts['aligned']} verses aligned by book / chapter / "
        f"verse ({unaligned} KJV verses without a WEB text left out), from Debian's sword-text-kjv "
        f"({KJV_MODULE} {module_version(KJV_MODULE)}) and sword-text-web ({WEB_MODULE} "
        f"{module_version(WEB_MODULE)}) read with diatheke; both texts public domain (their SWORD .conf files: "
        f'DistributionLicense=Public Domain; "World English Bible" is a trademark of eBible.org); split by book: '
        f"test {', '.join(TEST_BOOKS)}; validation {', '.join(VALIDATION_BOOKS)}; train the other "
        f"{len(BOOKS) - len(TEST_BOOKS) - len(VALIDATION_BOOKS)} books ({len(splits['train']['id'])} / "
        f"{len(splits['validation']['id'])} / {len(splits['test']['id'])} verses): the offline default"
    )
    return DatasetDict({name: Dataset.from_dict(columns) for name, columns in splits.items()}), note
