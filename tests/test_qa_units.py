"""Question answering's two hand-written steps, unit-tested: windows with offsets (finetune/data/qa_windows.py) and
the n-best span search (finetune/core/qa_spans.py). The truths are computed independently here: character ranges
from the tokenizer's own offsets, spans from brute force over every (start, end) pair."""

import itertools

import numpy as np
import pytest

from finetune.core.errors import UserError
from finetune.core.qa_spans import predict_answer, window_candidates
from finetune.data.qa_windows import EvalWindows, check_room, eval_windows, make_windows, train_windows

WORDS = "red blue green house tree car dog cat sun moon river stone bread milk door chair".split()


@pytest.fixture(scope="module")
def tokenizer(minilm_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_dir)


def split_of(rows):
    from datasets import Dataset

    return Dataset.from_list(rows)


def example(answer_word_index, answer_words=3, n_words=40, question="which colour is the door?"):
    words = [WORDS[i % len(WORDS)] for i in range(n_words)]
    context = " ".join(words)
    start = len(" ".join(words[:answer_word_index])) + (1 if answer_word_index else 0)
    text = " ".join(words[answer_word_index : answer_word_index + answer_words])
    assert context[start : start + len(text)] == text
    return {"id": f"q{answer_word_index}", "question": question, "context": context,
            "answers": {"text": [text], "answer_start": [start]}}  # fmt: skip


def context_ranges(tokenizer, row, max_length, stride):
    """The characters of the context each window covers, from the tokenizer's own offsets (the truth)."""
    enc = tokenizer(row["question"], row["context"], truncation="only_second", max_length=max_length, stride=stride,
                    return_overflowing_tokens=True, return_offsets_mapping=True)  # fmt: skip
    ranges = []
    for window in range(len(enc["input_ids"])):
        offsets = [o for o, s in zip(enc["offset_mapping"][window], enc.sequence_ids(window)) if s == 1]
        ranges.append((offsets[0][0], offsets[-1][1]))
    return ranges


def test_an_answer_is_labelled_only_in_the_windows_that_hold_it_whole(tokenizer):
    max_length, stride = 24, 6  # question 6 tokens + 3 specials: 15 context tokens per window, 6 shared
    rows = [example(i) for i in range(38)]  # a 3-word answer at every place of a 40-word context
    windows = train_windows(split_of(rows), tokenizer, max_length, stride)
    straddled, w = 0, 0
    for row in rows:
        a_start = row["answers"]["answer_start"][0]
        a_end = a_start + len(row["answers"]["text"][0])
        held = 0
        ranges = context_ranges(tokenizer, row, max_length, stride)
        assert len(ranges) >= 3  # a 40-word context over several windows
        for lo, hi in ranges:
            start, end = windows[w]["start_positions"], windows[w]["end_positions"]
            holds = lo <= a_start and a_end <= hi
            straddled += (lo < a_end and a_start < hi) and not holds
            if holds:
                held += 1
                ids = windows[w]["input_ids"][start : end + 1]
                assert tokenizer.decode(ids) == row["answers"]["text"][0]
                assert 0 < start <= end
            else:  # not in the window, or only part of it: [CLS]
                assert (start, end) == (0, 0)
            w += 1
        assert held >= 1  # the stride makes every 3-word answer whole in some window
    assert w == len(windows)
    assert straddled >= 10  # many answers are cut by some window's edge, and those windows said CLS


def test_the_windows_cut_only_the_context_and_share_doc_stride_tokens(tokenizer):
    row = example(5)
    table = EvalWindows()
    windows = eval_windows(split_of([row]), "test", tokenizer, 24, 6, table)
    question_ids = tokenizer(row["question"], add_special_tokens=False)["input_ids"]
    contexts = []
    for w in range(len(windows)):
        ids = windows[w]["input_ids"]
        assert ids[1 : 1 + len(question_ids)] == question_ids  # the whole question in every window
        assert len(ids) <= 24
        contexts.append([i for i, o in enumerate(table.offsets[w]) if o is not None])
        assert table.example[w] == 0 and table.split[w] == "test" and windows[w]["window_id"] == w
    for a, b in itertools.pairwise(range(len(contexts))):
        shared = [table.offsets[a][i] for i in contexts[a]][-6:]
        assert shared == [table.offsets[b][i] for i in contexts[b]][:6]


def test_window_ids_number_every_evaluation_split_apart(tokenizer):
    from datasets import DatasetDict

    splits = DatasetDict({name: split_of([example(3), example(20)]) for name in ("train", "validation", "test")})
    windows, table, notes = make_windows(splits, tokenizer, 24, 6)
    ids = list(windows["validation"]["window_id"]) + list(windows["test"]["window_id"])
    assert ids == list(range(len(table)))
    assert {table.split[i] for i in windows["test"]["window_id"]} == {"test"}
    assert "start_positions" in windows["train"].column_names and "window_id" not in windows["train"].column_names
    assert any("train: 2 questions ->" in n for n in notes)


def test_no_room_for_the_context_and_a_stride_that_cannot_advance_are_one_line_errors(tokenizer):
    from datasets import DatasetDict

    long_question = "which " * 30 + "door?"
    splits = DatasetDict({"train": split_of([example(3, question=long_question)])})
    with pytest.raises(UserError, match=r"train question 'q3' is 32 tokens long and leaves no room .*--max_length 24"):
        check_room(tokenizer, splits, 24, 6)
    row = example(3)
    splits = DatasetDict({"train": split_of([row])})
    room = len(
        [
            s
            for s in tokenizer(row["question"], row["context"], truncation="only_second", max_length=24).sequence_ids()
            if s == 1
        ]
    )  # fmt: skip  (the context tokens of a full first window)
    assert check_room(tokenizer, splits, 24, 6) == room
    with pytest.raises(UserError, match=rf"--doc_stride {room} is not smaller than the {room} tokens left for the"):
        check_room(tokenizer, splits, 24, room)
    assert check_room(tokenizer, splits, 24, room - 1) == room


# ---- the n-best search ------------------------------------------------------------------------------------------


def brute_force(start, end, offsets, max_answer_length):
    """Every valid (i, j) with its score: the independent truth for window_candidates' best span."""
    spans = []
    for i, j in itertools.product(range(len(offsets)), repeat=2):
        if offsets[i] is None or offsets[j] is None or j < i or j - i + 1 > max_answer_length:
            continue
        spans.append((start[i] + end[j], offsets[i][0], offsets[j][1]))
    return max(spans) if spans else None


@pytest.mark.parametrize("seed", range(20))
def test_the_best_candidate_is_the_best_valid_span_by_brute_force(seed):
    rng = np.random.default_rng(seed)
    T = 16
    offsets = [None] * 5 + [(2 * k, 2 * k + 1) for k in range(9)] + [None, None]  # question 0-4, context 5-13
    start, end = rng.normal(size=T), rng.normal(size=T)
    max_len = int(rng.integers(1, 6))
    best = max(window_candidates(start, end, offsets, n_best_size=T, max_answer_length=max_len),
               key=lambda c: c["score"])  # fmt: skip
    assert (best["score"], best["start"], best["end"]) == pytest.approx(brute_force(start, end, offsets, max_len))


def test_spans_outside_the_context_and_too_long_are_refused():
    offsets = [None, None, (0, 3), (4, 7), (8, 11), None]  # [CLS] question-token context x3 [SEP]
    start = np.array([9.0, 8.0, 1.0, 0.0, -1.0, 9.0])  # the best starts are outside the context
    end = np.array([9.0, 0.0, 0.0, 0.0, 2.0, 9.0])
    spans = window_candidates(start, end, offsets, n_best_size=6, max_answer_length=3)
    assert spans and all(s["start_token"] >= 2 and s["end_token"] <= 4 for s in spans)
    assert max(spans, key=lambda s: s["score"])[("start")] == 0  # tokens 2..4: characters 0..11
    spans = window_candidates(start, end, offsets, n_best_size=6, max_answer_length=2)
    assert all(s["end_token"] - s["start_token"] + 1 <= 2 for s in spans)
    answer = predict_answer("abc def ghi", [(start, end, offsets)], n_best_size=6, max_answer_length=2)
    # within 2 tokens: (3, 4) "def ghi" scores 0 + 2, before (2, 3), (2, 2) and (4, 4) at 1 each
    assert answer["text"] == "def ghi" and answer["nbest"][0]["probability"] > answer["nbest"][1]["probability"]
    assert sum(c["probability"] for c in answer["nbest"]) == pytest.approx(1.0)


def test_padding_beyond_a_window_is_never_a_span():
    offsets = [None, (0, 3), (4, 7), None]
    start = np.array([0.0, 1.0, 0.0, 0.0, 50.0, 50.0])  # logits padded to a batch's width: 2 extra positions
    end = np.array([0.0, 0.0, 1.0, 0.0, 50.0, 50.0])
    answer = predict_answer("abc def", [(start, end, offsets)], n_best_size=5, max_answer_length=5)
    assert answer["text"] == "abc def"


def test_v2_null_answer_wins_past_the_threshold_and_the_probability_is_real():
    offsets = [None, (0, 3), (4, 7), None]
    start = np.array([3.0, 2.0, 0.0, 0.0])  # null: 3 + 3 = 6; best span (1, 1): 2 + 1 = 3
    end = np.array([3.0, 1.0, 0.0, 0.0])
    windows = [(start, end, offsets)]
    v1 = predict_answer("abc def", windows, 5, 5, version_2=False)
    assert v1["text"] == "abc" and v1["no_answer_probability"] == 0.0  # v1 data: never "no answer"
    v2 = predict_answer("abc def", windows, 5, 5, version_2=True, null_score_diff_threshold=0.0)
    assert v2["text"] == "" and v2["no_answer_probability"] == pytest.approx(1 / (1 + np.exp(-3.0)))
    assert v2["nbest"][0]["text"] == "" and len(v2["nbest"]) == 4  # three spans and the null answer
    kept = predict_answer("abc def", windows, 5, 5, version_2=True, null_score_diff_threshold=3.5)
    assert kept["text"] == "abc" and kept["no_answer_probability"] == pytest.approx(v2["no_answer_probability"])


def test_v2_null_score_is_the_lowest_over_windows_and_spans_compete_across_windows():
    a = (np.array([5.0, 1.0, 0.0]), np.array([5.0, 1.0, 0.0]), [None, (0, 3), None])  # null 10, span 2
    b = (np.array([0.0, 0.0, 4.0]), np.array([0.0, 0.0, 4.0]), [None, None, (4, 7)])  # null 0, span 8
    answer = predict_answer("abc def", [a, b], 5, 5, version_2=True)
    assert answer["text"] == "def" and answer["score"] == 8.0
    assert answer["no_answer_probability"] == pytest.approx(1 / (1 + np.exp(8.0)))  # null = min(10, 0)


def test_the_engine_gives_the_evaluator_its_bookkeeping_keys_but_not_the_model():
    """QA windows carry a window_id for the evaluator (batch_only); the model's forward must never see it."""
    from types import SimpleNamespace

    import torch

    from finetune.core import engine

    class Model(torch.nn.Module):
        def forward(self, input_ids):  # takes no window_id: passing one would raise a TypeError
            return SimpleNamespace(start_logits=input_ids.float())

    class Evaluator:
        batch_only = ("window_id",)

        def reset(self):
            self.seen = []

        def add(self, batch, outputs, gather):
            self.seen += gather(batch["window_id"]).tolist()

        def compute(self):
            return {"windows": len(self.seen)}

    batches = [{"input_ids": torch.ones(2, 3), "window_id": torch.tensor([0, 1])},
               {"input_ids": torch.ones(1, 3), "window_id": torch.tensor([2])}]  # fmt: skip
    evaluator = Evaluator()
    accelerator = SimpleNamespace(is_main_process=True, gather_for_metrics=lambda tensors: tensors)
    assert engine.evaluate(Model(), batches, evaluator, accelerator) == {"windows": 3}
    assert evaluator.seen == [0, 1, 2]
