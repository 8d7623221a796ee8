"""SQuAD 2.0: exact match and F1 where some questions have no answer (Rajpurkar, Jia & Liang, 2018).

The normalisation is v1.1's (lower case, no punctuation, no articles a / an / the, single spaces). A question with
no gold answer expects the empty prediction: both empty scores 1, one empty 0. Gold answers that normalise to
nothing are not answers.

Every prediction carries `no_answer_probability`, the model's own belief that the question has no answer; it is
required, never assumed 0.0 (with a constant the best-threshold figures mean nothing). A question counts as
answered "no answer" when that probability exceeds `no_answer_threshold` (default 1.0: never, so `exact` and `f1`
score the texts as predicted). `best_exact` / `best_f1` sweep the threshold over the probabilities and report the
best score with the threshold that gives it. HasAns_* and NoAns_* score the two kinds of question apart.
Percentages (0-100), as the official evaluate-v2.0.py prints them.

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
    """v2.0's F1: when either side is empty, 1 if both are, else 0."""
    predicted, expected = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not predicted or not expected:
        return float(predicted == expected)
    common = sum((collections.Counter(predicted) & collections.Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def best_threshold(scores, probabilities, has_answer, predicted_empty):
    """(best score in percent, its threshold) over "no answer when probability > threshold".

    Start with every question answered "no answer" (each unanswerable one right); then, in order of increasing
    probability, let each question keep its predicted text: an answerable one gains its score, an unanswerable one
    loses 1 if the text is not empty. The best running total and the probability where it was reached.
    """
    total = best = float(sum(not h for h in has_answer))
    threshold = 0.0
    for i in sorted(range(len(scores)), key=lambda i: probabilities[i]):
        total += scores[i] if has_answer[i] else (0.0 if predicted_empty[i] else -1.0)
        if total > best:
            best, threshold = total, probabilities[i]
    return 100.0 * best / len(scores), threshold


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


class SquadV2(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="SQuAD 2.0 exact / F1 (percentages) overall, on answerable and unanswerable questions, "
            "and at the best no-answer threshold.",
            citation="Rajpurkar, Jia & Liang 2018, Know What You Don't Know: Unanswerable Questions for SQuAD.",
            inputs_description="predictions: [{id, prediction_text, no_answer_probability}]; references: [{id, "
            "answers: {text: [...], answer_start: [...]}}] (empty lists: no answer); no_answer_threshold: float",
            features=datasets.Features(
                {
                    "predictions": {
                        "id": datasets.Value("string"),
                        "prediction_text": datasets.Value("string"),
                        "no_answer_probability": datasets.Value("float64"),
                    },
                    "references": {
                        "id": datasets.Value("string"),
                        "answers": datasets.Sequence(
                            {"text": datasets.Value("string"), "answer_start": datasets.Value("int32")}
                        ),
                    },
                }
            ),
        )

    def _compute(self, predictions, references, no_answer_threshold=1.0):
        exact, f1, probabilities, has_answer, predicted_empty = [], [], [], [], []
        for prediction, reference in paired(predictions, references):
            probability = prediction.get("no_answer_probability")
            if probability is None:
                raise ValueError(
                    f"prediction {prediction['id']!r} has no no_answer_probability: pass the model's own (the "
                    f"best-threshold figures are meaningless with a constant)"
                )
            text = prediction["prediction_text"]
            golds = [gold for gold in reference["answers"]["text"] if normalize_answer(gold)] or [""]
            exact.append(max(float(normalize_answer(text) == normalize_answer(gold)) for gold in golds))
            f1.append(max(token_f1(text, gold) for gold in golds))
            probabilities.append(float(probability))
            has_answer.append(bool(reference["answers"]["text"]))
            predicted_empty.append(not text)

        def thresholded(scores):
            triples = zip(scores, probabilities, has_answer)
            return [float(not h) if p > no_answer_threshold else s for s, p, h in triples]

        def percent(scores, keep):
            chosen = [s for s, k in zip(scores, keep) if k]
            return 100.0 * sum(chosen) / len(chosen)

        final_exact, final_f1 = thresholded(exact), thresholded(f1)
        everyone = [True] * len(exact)
        result = {"exact": percent(final_exact, everyone), "f1": percent(final_f1, everyone), "total": len(exact)}
        for name, keep in (("HasAns", has_answer), ("NoAns", [not h for h in has_answer])):
            if any(keep):
                result[f"{name}_exact"] = percent(final_exact, keep)
                result[f"{name}_f1"] = percent(final_f1, keep)
                result[f"{name}_total"] = sum(keep)
        result["best_exact"], result["best_exact_thresh"] = best_threshold(
            exact, probabilities, has_answer, predicted_empty
        )
        result["best_f1"], result["best_f1_thresh"] = best_threshold(f1, probabilities, has_answer, predicted_empty)
        return result
