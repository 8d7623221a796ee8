"""The shipped evaluate modules against scikit-learn, an independent implementation."""

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from finetune.metrics import load_metric


@pytest.mark.parametrize("seed", [0, 1])
def test_accuracy_and_f1_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    refs, preds = rng.integers(0, 3, 200).tolist(), rng.integers(0, 3, 200).tolist()
    assert load_metric("accuracy").compute(predictions=preds, references=refs)["accuracy"] == pytest.approx(accuracy_score(refs, preds))
    macro = load_metric("f1").compute(predictions=preds, references=refs, average="macro")["f1"]
    assert macro == pytest.approx(f1_score(refs, preds, average="macro"))
    b_refs, b_preds = [r % 2 for r in refs], [p % 2 for p in preds]
    binary = load_metric("f1").compute(predictions=b_preds, references=b_refs)["f1"]
    assert binary == pytest.approx(f1_score(b_refs, b_preds))


def test_perplexity_is_exp_mean_token_nll():
    result = load_metric("perplexity").compute(predictions=[2.0, 4.0], references=[2, 2])
    assert result["perplexity"] == pytest.approx(np.exp(1.5))
