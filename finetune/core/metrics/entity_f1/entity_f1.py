"""Entity-level precision, recall and F1, with the semantics of seqeval (and of CoNLL's conlleval before it).

An entity counts as found only if its type and its exact first and last word both match: finding "Angela" of
"Angela Merkel" is one false positive and one false negative, not half right. Scores are micro-averaged over
entities (every entity weighs the same), plus the same three numbers per entity type; `accuracy` is the share
of words whose tag is right, O included (high even for a model that finds nothing, which is why F1 leads).

mode="lenient" (the default, seqeval's default and conlleval's) reads entities forgivingly: an I- that follows
O still opens an entity. mode="strict" with scheme IOB1 / IOB2 / IOBES (seqeval's `mode="strict"`) counts only
well-formed entities of that scheme: B-PER I-PER is one, a lone I-PER is none.

Self-contained (no finetune imports), so it also loads as a plain `evaluate` module by path.
"""

import datasets
import evaluate

# ---- lenient: seqeval.metrics.sequence_labeling.get_entities ------------------------------------------------


def _prefix_and_type(tag):
    return ("O", "") if tag == "O" else (tag[0], tag[2:])


def lenient_entities(tags):
    """(type, first, last) for each entity of one sentence, conlleval's reading."""
    found, start = [], 0
    prev_prefix, prev_type = "O", ""
    for i, tag in enumerate(list(tags) + ["O"]):
        prefix, kind = _prefix_and_type(tag)
        if (
            prev_prefix in ("E", "S")
            or (prev_prefix in ("B", "I") and prefix in ("B", "S", "O"))
            or (prev_prefix != "O" and prev_type != kind)
        ):
            found.append((prev_type, start, i - 1))
        if (
            prefix in ("B", "S")
            or (prev_prefix in ("E", "S", "O") and prefix in ("E", "I"))
            or (prefix != "O" and prev_type != kind)
        ):
            start = i
        prev_prefix, prev_type = prefix, kind
    return found


# ---- strict: seqeval.scheme (patterns of (previous prefix, current prefix, same type?)) ---------------------
# "any" in the third place: the types may differ or match. Each scheme says which pairs start an entity,
# continue one, and end one (checked on the word after it).

ANY = "BIOES"
_STRICT = {
    "IOB1": dict(
        allowed="IOB",
        start={("O", "I", None), ("I", "I", False), ("B", "I", None), ("I", "B", True), ("B", "B", True)},
        inside={("B", "I", True), ("I", "I", True)},
        end={
            ("I", "I", False),
            ("I", "O", None),
            ("I", "B", None),
            ("B", "O", None),
            ("B", "I", False),
            ("B", "B", True),
        },
    ),
    "IOB2": dict(
        allowed="IOB",
        start={(ANY, "B", None)},
        inside={("B", "I", True), ("I", "I", True)},
        end={
            ("I", "O", None),
            ("I", "I", False),
            ("I", "B", None),
            ("B", "O", None),
            ("B", "I", False),
            ("B", "B", None),
        },
    ),
    "IOBES": dict(
        allowed="IOBES",
        start={(ANY, "B", None), (ANY, "S", None)},
        inside={("B", "I", True), ("B", "E", True), ("I", "I", True), ("I", "E", True)},
        end={("S", ANY, None), ("E", ANY, None)},
    ),
}


def _matches(patterns, prev, current):
    (prev_prefix, prev_type), (prefix, kind) = prev, current
    return any(
        prev_prefix in p and prefix in c and (same is None or same == (prev_type == kind)) for p, c, same in patterns
    )


def strict_entities(tags, scheme):
    """(type, first, last) for each well-formed entity of `scheme` in one sentence (seqeval.scheme.Tokens)."""
    rules = _STRICT[scheme]
    tokens = [("O", "_")]  # the outside token before the sentence; seqeval names an empty type "_"
    for tag in tags:
        prefix, kind = _prefix_and_type(tag)
        if prefix not in rules["allowed"]:
            raise ValueError(f"tag {tag!r} is not allowed in {scheme} (prefixes {', '.join(rules['allowed'])})")
        tokens.append((prefix, kind or "_"))
    tokens.append(("O", "_"))  # ... and after it
    extended = tokens[1:]  # seqeval's extended_tokens: the sentence plus one trailing O

    found, i, prev = [], 0, tokens[0]
    while i < len(extended):
        if _matches(rules["start"], prev, extended[i]):
            end, inner = i + 1, extended[i]
            while end < len(extended) and _matches(rules["inside"], inner, extended[end]):
                inner, end = extended[end], end + 1
            if end >= len(extended):
                end = len(extended) - 2
            if _matches(rules["end"], extended[end - 1], extended[end]):
                found.append((extended[i][1], i, end - 1))
            i = end
        else:
            i += 1
        prev = extended[i - 1]
    return found


def _scores(tp, predicted, actual):
    precision = tp / predicted if predicted else 0.0
    recall = tp / actual if actual else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


class EntityF1(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Entity-level precision / recall / F1 (micro and per "
            "type) with seqeval's semantics, and tag accuracy.",
            citation="Ramshaw & Marcus 1995 (IOB); Tjong Kim Sang & De "
            "Meulder 2003 (CoNLL-2003); seqeval (Nakayama 2018).",
            inputs_description="predictions, references: list of sentences, each a list of tags (O, B-PER, ...); "
            "mode: 'lenient' | 'strict'; scheme (strict only): 'IOB1' | 'IOB2' | 'IOBES'",
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("string")),
                    "references": datasets.Sequence(datasets.Value("string")),
                }
            ),
        )

    def _compute(self, predictions, references, mode="lenient", scheme="IOB2"):
        read = lenient_entities if mode == "lenient" else (lambda tags: strict_entities(tags, scheme))
        if mode not in ("lenient", "strict") or (mode == "strict" and scheme not in _STRICT):
            raise ValueError(
                f"mode must be 'lenient' or 'strict' (with scheme in {sorted(_STRICT)}), got {mode!r} / {scheme!r}"
            )
        true, pred = set(), set()
        correct = total = 0
        for sentence, (p, r) in enumerate(zip(predictions, references)):
            if len(p) != len(r):
                raise ValueError(f"sentence {sentence}: {len(p)} predicted tags for {len(r)} reference tags")
            true.update((kind, sentence, a, b) for kind, a, b in read(r))
            pred.update((kind, sentence, a, b) for kind, a, b in read(p))
            correct += sum(x == y for x, y in zip(p, r))
            total += len(r)
        per_type = {}
        for kind in sorted({e[0] for e in true | pred}):
            t = {e for e in true if e[0] == kind}
            q = {e for e in pred if e[0] == kind}
            precision, recall, f1 = _scores(len(t & q), len(q), len(t))
            per_type[kind] = {"precision": precision, "recall": recall, "f1": f1, "number": len(t)}
        precision, recall, f1 = _scores(len(true & pred), len(pred), len(true))
        return {
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "accuracy": correct / total if total else 0.0,
            "per_type": per_type,
        }
