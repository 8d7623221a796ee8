"""From start/end logits to answers: the n-best span search of extractive question answering (as run_qa's
utils_qa does it), without its traps.

For every window of an example, the model gives each token a start score s_i and an end score e_j; a span (i, j)
scores s_i + e_j. The candidates are the --n_best_size best starts x the --n_best_size best ends of each window,
kept only when both tokens are inside the context (offsets not None), j >= i and j - i + 1 <= --max_answer_length;
they are mapped to character offsets in the context, and the best --n_best_size over all windows form the n-best list
(with softmax probabilities over it).

SQuAD v2 (unanswerable questions): the "null" answer scores s_CLS + e_CLS (the lowest over the example's windows,
as run_qa). The prediction is "" when null - best span > --null_score_diff_threshold. Whether the data is v2 is
DETECTED from it (a split with empty answers), never a flag one can forget (run_qa without
--version_2_with_negative scores about 44 F1 on SQuAD v2 because it never predicts "").
The no-answer probability passed to the squad_v2 metric is the softmax over {null, best span}:
sigmoid(null - best), a real number for the metric's best-threshold search (run_qa passes the constant 0.0).
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np


def window_candidates(
    start_logits, end_logits, offsets: list[Optional[tuple[int, int]]], n_best_size: int, max_answer_length: int
) -> list[dict]:
    """The valid spans among the n_best_size best starts x ends of one window: dicts with start/end character
    offsets (end exclusive), start/end token and score."""
    start_logits, end_logits = np.asarray(start_logits), np.asarray(end_logits)
    length = len(offsets)  # logits may be padded beyond the window
    best_starts = np.argsort(start_logits[:length])[::-1][:n_best_size]
    best_ends = np.argsort(end_logits[:length])[::-1][:n_best_size]
    spans = []
    for i in best_starts:
        for j in best_ends:
            if offsets[i] is None or offsets[j] is None:  # the question, a special token or padding
                continue
            if j < i or j - i + 1 > max_answer_length:
                continue
            spans.append(
                {
                    "start": offsets[i][0],
                    "end": offsets[j][1],
                    "start_token": int(i),
                    "end_token": int(j),
                    "score": float(start_logits[i] + end_logits[j]),
                }
            )
    return spans


def null_score(start_logits, end_logits, cls_index: int = 0) -> float:
    return float(start_logits[cls_index] + end_logits[cls_index])


def predict_answer(
    context: str,
    windows: list[tuple],
    n_best_size: int = 20,
    max_answer_length: int = 30,
    version_2: bool = False,
    null_score_diff_threshold: float = 0.0,
) -> dict:
    """One example's answer from its windows [(start_logits, end_logits, offsets), ...].

    Returns {"text", "start", "end", "score", "no_answer_probability", "nbest": [{text, start, end, score,
    probability}, ...]}. v1 data: the best span always (or "" when no window has a valid span). v2: "" when the
    null score beats the best span by more than the threshold; the n-best list then holds the null answer too.
    """
    candidates, null = [], None
    for start_logits, end_logits, offsets in windows:
        candidates += window_candidates(start_logits, end_logits, offsets, n_best_size, max_answer_length)
        score = null_score(start_logits, end_logits)
        null = score if null is None or score < null else null
    candidates.sort(key=lambda c: c["score"], reverse=True)
    nbest = [{**c, "text": context[c["start"] : c["end"]]} for c in candidates[:n_best_size]]
    best = nbest[0] if nbest else None
    if version_2:
        nbest.append({"text": "", "start": -1, "end": -1, "score": null})
        nbest.sort(key=lambda c: c["score"], reverse=True)  # (n_best_size spans and the null answer, as run_qa)
    scores = np.array([c["score"] for c in nbest], dtype=np.float64)
    probabilities = np.exp(scores - scores.max()) if len(scores) else scores
    probabilities = probabilities / probabilities.sum() if len(scores) else probabilities
    for c, p in zip(nbest, probabilities):
        c["probability"] = float(p)
    if best is None:  # no valid span in any window (a context of nothing but question, or max_answer_length tiny)
        answer = {"text": "", "start": -1, "end": -1, "score": null if null is not None else float("-inf")}
        no_answer = 1.0
    else:
        answer = {k: best[k] for k in ("text", "start", "end", "score")}
        no_answer = 1.0 / (1.0 + math.exp(-(null - best["score"]))) if version_2 else 0.0
        if version_2 and null - best["score"] > null_score_diff_threshold:
            answer = {"text": "", "start": -1, "end": -1, "score": null}
    keep = ("text", "start", "end", "score", "probability")
    return {**answer, "no_answer_probability": no_answer, "nbest": [{k: c[k] for k in keep} for c in nbest]}
