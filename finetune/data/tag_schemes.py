"""Entity tag schemes: IOB1, IOB2 and IOBES, read as entity spans and written back.

A tag is `O` (outside any entity) or PREFIX-TYPE, e.g. B-PER. The schemes differ in where the prefixes go:

    words    Angela  Merkel  met  Emmanuel  Macron  in  Paris
    IOB2     B-PER   I-PER   O    B-PER     I-PER   O   B-LOC     every entity starts with B-
    IOB1     I-PER   I-PER   O    I-PER     I-PER   O   I-LOC     B- only between two touching same-type entities
    IOBES    B-PER   E-PER   O    B-PER     E-PER   O   S-LOC     E- ends an entity, S- is a one-word entity

One idea does all the work here: `spans` reads any of them the way seqeval (and CoNLL's conlleval) does, and
`encode` writes spans in a chosen scheme. A sequence is valid in a scheme exactly when writing its spans back
gives the same tags; converting is spans-then-encode into another scheme; repairing is the same into its own.
"""

from __future__ import annotations

from collections import Counter

from finetune.core.errors import UserError

SCHEMES = ("IOB1", "IOB2", "IOBES")
PREFIXES = ("B", "I", "E", "S")


def split_tag(tag: str) -> tuple[str, str]:
    """'B-PER' -> ('B', 'PER'); 'O' -> ('O', '')."""
    if tag == "O":
        return "O", ""
    prefix, sep, kind = tag.partition("-")
    if not sep or prefix not in PREFIXES or not kind:
        raise UserError(
            f"tag {tag!r} is neither O nor PREFIX-TYPE with a prefix in B/I/E/S (e.g. B-PER): "
            f"this recipe labels entities in the IOB1, IOB2 or IOBES scheme"
        )
    return prefix, kind


def spans(tags: list[str]) -> list[tuple[str, int, int]]:
    """The entities in `tags` as (type, first, last) word indices, read leniently as seqeval's default mode does:
    an entity also starts at an I- (or E-) that follows O or another type, so IOB1 and broken IOB2 read sensibly."""
    found, start = [], None
    prev_prefix, prev_kind = "O", ""
    for i, tag in enumerate(list(tags) + ["O"]):
        prefix, kind = split_tag(tag)
        ends = (
            prev_prefix in ("E", "S")
            or (prev_prefix in ("B", "I") and prefix in ("B", "S", "O"))
            or (prev_prefix != "O" and prev_kind != kind)
        )
        if ends and start is not None:
            found.append((prev_kind, start, i - 1))
            start = None
        starts = (
            prefix in ("B", "S")
            or (prev_prefix in ("E", "S", "O") and prefix in ("E", "I"))
            or (prefix != "O" and prev_kind != kind)
        )
        if starts:
            start = i
        prev_prefix, prev_kind = prefix, kind
    return found


def encode(entities: list[tuple[str, int, int]], length: int, scheme: str) -> list[str]:
    """Write entity spans (type, first, last) as `length` tags in `scheme`."""
    tags = ["O"] * length
    previous_end = {}  # last word of the entity before, by type: IOB1 needs B- only right after one
    for kind, first, last in entities:
        for i in range(first, last + 1):
            tags[i] = f"I-{kind}"
        if scheme == "IOB2":
            tags[first] = f"B-{kind}"
        elif scheme == "IOB1":
            if previous_end.get(kind) == first - 1:
                tags[first] = f"B-{kind}"
        elif scheme == "IOBES":
            if first == last:
                tags[first] = f"S-{kind}"
            else:
                tags[first], tags[last] = f"B-{kind}", f"E-{kind}"
        else:
            raise UserError(f"unknown tag scheme {scheme!r}: use one of {', '.join(SCHEMES)}")
        previous_end[kind] = last
    return tags


def detect(sentences: list[list[str]]) -> str:
    """The scheme the tags are written in: IOBES if any E-/S-; IOB2 if some B- opens an entity (follows O or
    another type); else IOB1 (I- opens entities, B- at most between touching same-type entities)."""
    if any(split_tag(tag)[0] in ("E", "S") for tags in sentences for tag in tags):
        return "IOBES"
    for tags in sentences:
        previous = "O"
        for tag in tags:
            prefix, kind = split_tag(tag)
            if prefix == "B" and previous not in (f"B-{kind}", f"I-{kind}"):
                return "IOB2"
            previous = tag
    # No B- opened an entity: I- does (IOB1), or there are no entities at all (nothing to check either way).
    return "IOB1" if any(tag != "O" for tags in sentences for tag in tags) else "IOB2"


def invalid_tags(sentences: list[list[str]], scheme: str) -> Counter:
    """How many tags break `scheme`, by what they are (e.g. {'I-PER': 3} for I- tags opening entities in IOB2)."""
    broken = Counter()
    for tags in sentences:
        rewritten = encode(spans(tags), len(tags), scheme)
        broken.update(tag for tag, good in zip(tags, rewritten) if tag != good)
    return broken


def rewrite(sentences: list[list[str]], scheme: str) -> list[list[str]]:
    """Every sentence's entities written in `scheme`: converts between schemes, and repairs within one."""
    return [encode(spans(tags), len(tags), scheme) for tags in sentences]


def tag_order(tags) -> list[str]:
    """A readable label order: O first, then by entity type, B I E S within a type."""

    def key(tag):
        prefix, kind = split_tag(tag)
        return (tag != "O", kind, PREFIXES.index(prefix) if prefix in PREFIXES else -1)

    return sorted(set(tags), key=key)
