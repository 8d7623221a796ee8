"""The shipped evaluate modules against scikit-learn and scipy, independent implementations."""

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef, mean_absolute_error, mean_squared_error

from finetune.core.metrics import load_metric


@pytest.mark.parametrize("seed", [0, 1])
def test_accuracy_and_f1_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    refs, preds = rng.integers(0, 3, 200).tolist(), rng.integers(0, 3, 200).tolist()
    assert load_metric("accuracy").compute(predictions=preds, references=refs)["accuracy"] == pytest.approx(
        accuracy_score(refs, preds)
    )
    for average in ("macro", "micro"):
        ours = load_metric("f1").compute(predictions=preds, references=refs, average=average)["f1"]
        assert ours == pytest.approx(f1_score(refs, preds, average=average))
    b_refs, b_preds = [r % 2 for r in refs], [p % 2 for p in preds]
    binary = load_metric("f1").compute(predictions=b_preds, references=b_refs)["f1"]
    assert binary == pytest.approx(f1_score(b_refs, b_preds))


@pytest.mark.parametrize("classes", [2, 4])
def test_matthews_correlation_matches_sklearn(classes):
    rng = np.random.default_rng(classes)
    refs = rng.integers(0, classes, 300)
    preds = np.where(rng.random(300) < 0.6, refs, rng.integers(0, classes, 300))  # correlated, not equal
    ours = load_metric("matthews_correlation").compute(predictions=preds.tolist(), references=refs.tolist())
    assert ours["matthews_correlation"] == pytest.approx(matthews_corrcoef(refs, preds))
    constant = load_metric("matthews_correlation").compute(predictions=[1] * 10, references=refs[:10].tolist())
    assert constant["matthews_correlation"] == matthews_corrcoef(refs[:10], [1] * 10) == 0.0


def test_regression_metrics_match_scipy_and_sklearn():
    rng = np.random.default_rng(3)
    refs = rng.integers(0, 6, 250).astype(float)  # STS-B-like scores with many ties (Spearman's average ranks)
    preds = refs + rng.normal(0, 1.5, 250)
    preds[:40] = np.round(preds[:40])  # ties on the prediction side too

    def score(name):
        return load_metric(name).compute(predictions=preds.tolist(), references=refs.tolist())[name]

    assert score("pearson") == pytest.approx(stats.pearsonr(preds, refs).statistic)
    assert score("spearman") == pytest.approx(stats.spearmanr(preds, refs).statistic)
    assert score("mse") == pytest.approx(mean_squared_error(refs, preds))
    assert score("mae") == pytest.approx(mean_absolute_error(refs, preds))


def test_multilabel_metrics_match_sklearn():
    rng = np.random.default_rng(4)
    refs = (rng.random((120, 5)) < 0.3).astype(int)
    refs[:, 4] = 0  # a label never true: sklearn's zero_division=0 convention
    preds = np.where(rng.random((120, 5)) < 0.7, refs, 1 - refs)
    preds[:, 4] = 0
    ours = load_metric("multilabel").compute(predictions=preds.tolist(), references=refs.tolist())
    assert ours["f1_micro"] == pytest.approx(f1_score(refs, preds, average="micro", zero_division=0))
    assert ours["f1_macro"] == pytest.approx(f1_score(refs, preds, average="macro", zero_division=0))
    assert ours["subset_accuracy"] == pytest.approx(accuracy_score(refs, preds))


def test_perplexity_is_exp_mean_token_nll():
    result = load_metric("perplexity").compute(predictions=[2.0, 4.0], references=[2, 2])
    assert result["perplexity"] == pytest.approx(np.exp(1.5))
