"""The squad / squad_v2 evaluate modules against the official evaluation scripts' logic, reimplemented here.

The reference below follows evaluate-v1.1.py and evaluate-v2.0.py (SQuAD's own scripts): per-question score
dicts keyed by id, the no-answer threshold applied afterwards, find_best_thresh's sweep. It shares no code with
finetune/core/metrics, and the inputs are random: exact copies, case / punctuation / article variants, partial
overlaps, unrelated words, empty predictions, gold answers that normalise to nothing, and v2 questions without
answers with random no-answer probabilities.
"""

import collections
import random
import re
import string

import pytest

from finetune.core.metrics import GREATER_IS_BETTER, load_metric

# ---- the official logic, written independently ----------------------------------------------------------------


def official_normalize(s):
    def remove_articles(text):
        return re.sub(r"\b(a|an|the)\b", " ", text, flags=re.UNICODE)

    def white_space_fix(text):
        return " ".join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    return white_space_fix(remove_articles(remove_punc(s.lower())))


def v1_f1(prediction, ground_truth):
    prediction_tokens = official_normalize(prediction).split()
    ground_truth_tokens = official_normalize(ground_truth).split()
    common = collections.Counter(prediction_tokens) & collections.Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(ground_truth_tokens)
    return (2 * precision * recall) / (precision + recall)


def official_v1(references, predictions):
    """evaluate-v1.1.py's evaluate(): max over ground truths, then 100 * mean."""
    preds = {p["id"]: p["prediction_text"] for p in predictions}
    f1 = exact_match = total = 0
    for ref in references:
        total += 1
        ground_truths = ref["answers"]["text"]
        prediction = preds[ref["id"]]
        exact_match += max(official_normalize(prediction) == official_normalize(gt) for gt in ground_truths)
        f1 += max(v1_f1(prediction, gt) for gt in ground_truths)
    return {"exact_match": 100.0 * exact_match / total, "f1": 100.0 * f1 / total}


def compute_exact(a_gold, a_pred):
    return int(official_normalize(a_gold) == official_normalize(a_pred))


def compute_f1(a_gold, a_pred):
    gold_toks = official_normalize(a_gold).split() if a_gold else []
    pred_toks = official_normalize(a_pred).split() if a_pred else []
    common = collections.Counter(gold_toks) & collections.Counter(pred_toks)
    num_same = sum(common.values())
    if len(gold_toks) == 0 or len(pred_toks) == 0:
        return int(gold_toks == pred_toks)
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(pred_toks)
    recall = 1.0 * num_same / len(gold_toks)
    return (2 * precision * recall) / (precision + recall)


def find_best_thresh(preds, scores, na_probs, qid_to_has_ans):
    num_no_ans = sum(1 for k in qid_to_has_ans if not qid_to_has_ans[k])
    cur_score = num_no_ans
    best_score = cur_score
    best_thresh = 0.0
    qid_list = sorted(na_probs, key=lambda k: na_probs[k])
    for qid in qid_list:
        if qid not in scores:
            continue
        if qid_to_has_ans[qid]:
            diff = scores[qid]
        else:
            diff = -1 if preds[qid] else 0
        cur_score += diff
        if cur_score > best_score:
            best_score = cur_score
            best_thresh = na_probs[qid]
    return 100.0 * best_score / len(scores), best_thresh


def official_v2(references, predictions, na_prob_thresh=1.0):
    """evaluate-v2.0.py's main(), with the no-answer probabilities given (its --na-prob-file)."""
    preds = {p["id"]: p["prediction_text"] for p in predictions}
    na_probs = {p["id"]: p["no_answer_probability"] for p in predictions}
    qid_to_has_ans = {r["id"]: bool(r["answers"]["text"]) for r in references}
    exact_raw, f1_raw = {}, {}
    for r in references:
        gold_answers = [a for a in r["answers"]["text"] if official_normalize(a)] or [""]
        exact_raw[r["id"]] = max(compute_exact(a, preds[r["id"]]) for a in gold_answers)
        f1_raw[r["id"]] = max(compute_f1(a, preds[r["id"]]) for a in gold_answers)

    def apply_threshold(scores):
        return {
            qid: float(not qid_to_has_ans[qid]) if na_probs[qid] > na_prob_thresh else s for qid, s in scores.items()
        }

    exact_t, f1_t = apply_threshold(exact_raw), apply_threshold(f1_raw)

    def make_eval_dict(qid_list):
        return {
            "exact": 100.0 * sum(exact_t[k] for k in qid_list) / len(qid_list),
            "f1": 100.0 * sum(f1_t[k] for k in qid_list) / len(qid_list),
            "total": len(qid_list),
        }

    out = make_eval_dict(list(qid_to_has_ans))
    has_ans = [k for k, v in qid_to_has_ans.items() if v]
    no_ans = [k for k, v in qid_to_has_ans.items() if not v]
    for prefix, qids in (("HasAns", has_ans), ("NoAns", no_ans)):
        if qids:
            out.update({f"{prefix}_{k}": v for k, v in make_eval_dict(qids).items()})
    out["best_exact"], out["best_exact_thresh"] = find_best_thresh(preds, exact_raw, na_probs, qid_to_has_ans)
    out["best_f1"], out["best_f1_thresh"] = find_best_thresh(preds, f1_raw, na_probs, qid_to_has_ans)
    return out


# ---- random questions -----------------------------------------------------------------------------------------

WORDS = "cat dog river Paris 1998 blue engine model data graph the a an The An".split()
PUNCT = list(",.;:!?'\"()-")


def random_answer(rng):
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 6)))


def variant(rng, gold):
    """A prediction related to `gold` in one of the ways real predictions are."""
    tokens = gold.split()
    kind = rng.randrange(7)
    if kind == 0:
        return gold
    if kind == 1:  # case and punctuation only: exact after normalisation
        return "".join(ch.upper() if rng.random() < 0.3 else ch for ch in gold) + rng.choice(PUNCT)
    if kind == 2:  # an article in front: exact after normalisation
        return f"{rng.choice(['the', 'A', 'an'])} {gold}"
    if kind == 3:  # a partial overlap
        start = rng.randrange(len(tokens))
        return " ".join(tokens[start : start + rng.randint(1, len(tokens))] + [rng.choice(WORDS)] * rng.randint(0, 2))
    if kind == 4:
        return random_answer(rng)
    if kind == 5:
        return ""
    return rng.choice(PUNCT) + " " + rng.choice(["the", "a"])  # normalises to nothing


def random_questions(seed, count, with_no_answers):
    rng = random.Random(seed)
    references, predictions = [], []
    for i in range(count):
        if with_no_answers and rng.random() < 0.35:
            golds = []
        else:
            golds = [random_answer(rng) for _ in range(rng.randint(1, 3))]
            if with_no_answers and rng.random() < 0.1:
                golds.append(rng.choice(["the", "a .", "!"]))  # a gold that normalises to nothing
        qid = f"q{i}"
        references.append({"id": qid, "answers": {"text": golds, "answer_start": [0] * len(golds)}})
        text = variant(rng, rng.choice(golds)) if golds else rng.choice(["", "", random_answer(rng)])
        prediction = {"id": qid, "prediction_text": text}
        if with_no_answers:
            prediction["no_answer_probability"] = rng.random()
        predictions.append(prediction)
    order = list(range(count))
    rng.shuffle(order)  # matched by id, not by position
    return references, [predictions[i] for i in order]


@pytest.fixture(scope="module")
def squad():
    return load_metric("squad")


@pytest.fixture(scope="module")
def squad_v2():
    return load_metric("squad_v2")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_squad_v1_matches_the_official_logic(squad, seed):
    references, predictions = random_questions(seed, 300, with_no_answers=False)
    ours = squad.compute(predictions=predictions, references=references)
    official = official_v1(references, predictions)
    assert ours == pytest.approx(official, rel=1e-12, abs=1e-12)
    # neither trivial nor perfect (f1 may fall below exact_match: in v1.1 two answers that normalise to nothing
    # match exactly yet share no token, so their F1 is 0)
    assert 0 < ours["exact_match"] < 100 and 0 < ours["f1"] < 100


@pytest.mark.parametrize("seed, threshold", [(0, 1.0), (1, 1.0), (2, 0.5), (3, 0.2)])
def test_squad_v2_matches_the_official_logic(squad_v2, seed, threshold):
    references, predictions = random_questions(seed, 300, with_no_answers=True)
    ours = squad_v2.compute(predictions=predictions, references=references, no_answer_threshold=threshold)
    official = official_v2(references, predictions, na_prob_thresh=threshold)
    assert set(ours) == set(official)
    assert ours == pytest.approx(official, rel=1e-12, abs=1e-12)
    assert ours["HasAns_total"] > 0 and ours["NoAns_total"] > 0
    assert 0 < ours["best_exact_thresh"] < 1  # a probability of the data, not a constant


def test_squad_v2_uses_the_probabilities_it_is_given(squad_v2):
    """A model whose no-answer probability separates the questions well gets a better best_f1 than its raw f1."""
    references = [
        {"id": "a", "answers": {"text": ["the river"], "answer_start": [0]}},
        {"id": "b", "answers": {"text": [], "answer_start": []}},
    ]
    predictions = [
        {"id": "a", "prediction_text": "river", "no_answer_probability": 0.1},
        {"id": "b", "prediction_text": "the dog", "no_answer_probability": 0.8},
    ]
    result = squad_v2.compute(predictions=predictions, references=references)
    assert result["f1"] == pytest.approx(50.0)  # b answered wrongly at the default threshold (1.0: never null)
    assert result["best_f1"] == pytest.approx(100.0) and result["best_f1_thresh"] == pytest.approx(0.1)
    assert result == pytest.approx(official_v2(references, predictions))


def test_squad_metrics_refuse_what_would_mislead(squad, squad_v2):
    refs = [{"id": "a", "answers": {"text": ["x"], "answer_start": [0]}}]
    with pytest.raises(ValueError, match="no_answer_probability"):
        no_probability = {"id": "a", "prediction_text": "x", "no_answer_probability": None}
        squad_v2.compute(predictions=[no_probability], references=refs)
    with pytest.raises(ValueError, match="different questions"):
        squad.compute(predictions=[{"id": "b", "prediction_text": "x"}], references=refs)
    with pytest.raises(ValueError, match="squad_v2"):
        squad.compute(
            predictions=[{"id": "a", "prediction_text": ""}],
            references=[{"id": "a", "answers": {"text": [], "answer_start": []}}],
        )


def test_question_answering_metrics_state_their_direction():
    for name in ("exact_match", "f1", "exact", "HasAns_exact", "HasAns_f1", "NoAns_exact", "NoAns_f1"):
        assert GREATER_IS_BETTER[name] is True
    assert GREATER_IS_BETTER["best_exact"] is GREATER_IS_BETTER["best_f1"] is True
