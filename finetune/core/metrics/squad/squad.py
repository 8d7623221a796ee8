"""SQuAD v1.1: exact match and F1 over answer tokens, after the official normalisation (Rajpurkar et al., 2016).

Both answers are normalised first: lower case, punctuation removed, the articles a / an / the removed, whitespace
collapsed. Exact match is 1 when the normalised texts are equal; F1 is the harmonic mean of precision and recall
of their bags of tokens. Each question is scored against its best-matching gold answer (SQuAD's dev set has up
to five per question), and the averages are percentages (0-100), as SQuAD's leaderboard and papers report them.

Predictions are matched to references by `id`: a reference without a prediction is an error here, not the silent
0 of the official script.

Self-contained (no finetune imports), so it also loads as a plain `evaluate` module by path.
"""

import collections
import re
import string

import datasets
import evaluate

_PUNCTUATION = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def token_f1(prediction: str, gold: str) -> float:
    """v1.1's F1: no common token (an empty answer included) scores 0."""
    predicted, expected = normalize_answer(prediction).split(), normalize_answer(gold).split()
    common = sum((collections.Counter(predicted) & collections.Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def paired(predictions, references):
    """[(prediction, reference)] matched by id; ids missing on either side, or repeated, are a ValueError."""
    by_id = {}
    for prediction in predictions:
        if prediction["id"] in by_id:
            raise ValueError(f"two predictions for the question id {prediction['id']!r}")
        by_id[prediction["id"]] = prediction
    missing = [r["id"] for r in references if r["id"] not in by_id]
    if missing or len(by_id) != len(references):
        raise ValueError(
            f"predictions and references name different questions ({len(missing)} references without a prediction, "
            f"e.g. {missing[:3]}): give one prediction per reference id"
        )
    return [(by_id[r["id"]], r) for r in references]


class Squad(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="SQuAD v1.1 exact match and F1 (percentages), the official normalisation, best gold answer.",
            citation="Rajpurkar, Zhang, Lopyrev & Liang 2016, SQuAD: 100,000+ Questions for Machine Comprehension "
            "of Text.",
            inputs_description="predictions: [{id, prediction_text}]; references: [{id, answers: {text: [...], "
            "answer_start: [...]}}]",
            features=datasets.Features(
                {
                    "predictions": {"id": datasets.Value("string"), "prediction_text": datasets.Value("string")},
                    "references": {
                        "id": datasets.Value("string"),
                        "answers": datasets.Sequence(
                            {"text": datasets.Value("string"), "answer_start": datasets.Value("int32")}
                        ),
                    },
                }
            ),
        )

    def _compute(self, predictions, references):
        exact = f1 = 0.0
        for prediction, reference in paired(predictions, references):
            golds = reference["answers"]["text"]
            if not golds:
                raise ValueError(
                    f"question {reference['id']!r} has no gold answer: that is SQuAD 2.0; score with squad_v2"
                )
            text = prediction["prediction_text"]
            exact += max(float(normalize_answer(text) == normalize_answer(gold)) for gold in golds)
            f1 += max(token_f1(text, gold) for gold in golds)
        total = len(references)
        return {"exact_match": 100.0 * exact / total, "f1": 100.0 * f1 / total}
