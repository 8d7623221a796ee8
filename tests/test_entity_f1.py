"""The shipped entity_f1 metric against the seqeval package, on the same random (often malformed) tag sequences."""

import random
import warnings

import pytest
from seqeval.metrics import accuracy_score, classification_report
from seqeval.scheme import IOB1, IOB2, IOBES

from finetune.core.metrics import load_metric

TYPES = ("PER", "LOC", "ORG")


def random_sentences(seed, prefixes, n=60):
    rng = random.Random(seed)
    tags = ["O"] + [f"{p}-{t}" for p in prefixes for t in TYPES]
    weights = [6] + [1] * (len(tags) - 1)  # mostly O, as in real data

    def sentence(length):
        return rng.choices(tags, weights, k=length)

    lengths = [rng.randint(1, 12) for _ in range(n)]
    return [sentence(k) for k in lengths], [sentence(k) for k in lengths]


def assert_same_as_seqeval(ours, references, predictions, **seqeval_kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # seqeval warns on zero division; both sides then give 0
        report = classification_report(references, predictions, output_dict=True, zero_division=0, **seqeval_kwargs)
    assert ours["precision"] == pytest.approx(report["micro avg"]["precision"])
    assert ours["recall"] == pytest.approx(report["micro avg"]["recall"])
    assert ours["f1"] == pytest.approx(report["micro avg"]["f1-score"])
    assert ours["accuracy"] == pytest.approx(accuracy_score(references, predictions))
    types = {k for k in report if k not in ("micro avg", "macro avg", "weighted avg")}
    assert set(ours["per_type"]) >= types
    for kind in types:
        assert ours["per_type"][kind]["f1"] == pytest.approx(report[kind]["f1-score"]), kind
        assert ours["per_type"][kind]["precision"] == pytest.approx(report[kind]["precision"]), kind
        assert ours["per_type"][kind]["number"] == report[kind]["support"], kind


@pytest.fixture(scope="module")
def metric():
    return load_metric("entity_f1")


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("prefixes", [("B", "I"), ("I",), ("B", "I", "E", "S")])
def test_lenient_mode_matches_seqeval_default(metric, seed, prefixes):
    references, predictions = random_sentences(seed, prefixes)
    ours = metric.compute(predictions=predictions, references=references)
    assert_same_as_seqeval(ours, references, predictions)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(
    "scheme, seqeval_scheme, prefixes",
    [("IOB2", IOB2, ("B", "I")), ("IOB1", IOB1, ("B", "I")), ("IOBES", IOBES, ("B", "I", "E", "S"))],
)
def test_strict_mode_matches_seqeval_strict(metric, seed, scheme, seqeval_scheme, prefixes):
    references, predictions = random_sentences(seed, prefixes)
    ours = metric.compute(predictions=predictions, references=references, mode="strict", scheme=scheme)
    assert_same_as_seqeval(ours, references, predictions, mode="strict", scheme=seqeval_scheme)


def test_strict_and_lenient_differ_on_a_lone_i_tag(metric):
    references, predictions = [["B-PER", "I-PER", "O"]], [["I-PER", "I-PER", "O"]]
    assert metric.compute(predictions=predictions, references=references)["f1"] == 1.0
    assert metric.compute(predictions=predictions, references=references, mode="strict", scheme="IOB2")["f1"] == 0.0
