"""Tests for emofuse.metrics.functional: sklearn parity, hand-computed cases, paper-derived figures."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from emofuse.metrics import (
    aggregate,
    binarized_metrics,
    ccc,
    classification_metrics,
    confusion_matrix,
    format_mean_std,
    mae,
    metrics_from_confusion,
    mult_f1,
    pcc,
    positive_class_f1,
    regression_metrics,
    weighted_f1_from_per_class,
)

LABELS4 = ["neutral", "happy", "sad", "anger"]


def _random_case(seed: int, n: int = 200, absent_pred: int = 1, absent_true: int = 0):
    """Random 4-class labels; the first ``absent_pred`` classes never predicted, last ``absent_true`` never true."""
    rng = np.random.default_rng(seed)
    true_classes = LABELS4[: len(LABELS4) - absent_true] if absent_true else LABELS4
    y_true = rng.choice(true_classes, size=n)
    y_pred = rng.choice(LABELS4[absent_pred:], size=n)
    agree = rng.random(n) < 0.4  # some signal so scores are not all near chance
    y_pred = np.where(agree & np.isin(y_true, LABELS4[absent_pred:]), y_true, y_pred)
    return y_true, y_pred


# --------------------------------------------------------------------------------------------------
# classification vs scikit-learn


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("absent_pred", [0, 1, 2])
def test_classification_matches_sklearn(seed, absent_pred):
    y_true, y_pred = _random_case(seed, absent_pred=absent_pred)
    m = classification_metrics(y_true, y_pred, labels=LABELS4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert m["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
        assert m["wa"] == m["accuracy"]
        assert m["ua"] == pytest.approx(skm.balanced_accuracy_score(y_true, y_pred))
        assert m["ua"] == pytest.approx(skm.recall_score(y_true, y_pred, labels=LABELS4, average="macro"))
        assert m["weighted_f1"] == pytest.approx(
            skm.f1_score(y_true, y_pred, labels=LABELS4, average="weighted", zero_division=0)
        )
        assert m["macro_f1"] == pytest.approx(
            skm.f1_score(y_true, y_pred, labels=LABELS4, average="macro", zero_division=0)
        )
        f1 = skm.f1_score(y_true, y_pred, labels=LABELS4, average=None, zero_division=0)
        rec = skm.recall_score(y_true, y_pred, labels=LABELS4, average=None, zero_division=0)
        prec = skm.precision_score(y_true, y_pred, labels=LABELS4, average=None, zero_division=0)
    np.testing.assert_allclose([m["per_class_f1"][k] for k in LABELS4], f1)
    np.testing.assert_allclose([m["per_class_recall"][k] for k in LABELS4], rec)
    np.testing.assert_allclose([m["per_class_precision"][k] for k in LABELS4], prec)
    assert m["confusion"] == skm.confusion_matrix(y_true, y_pred, labels=LABELS4).tolist()
    assert m["labels"] == LABELS4
    assert m["support"] == {k: int(np.sum(y_true == k)) for k in LABELS4}
    for k in LABELS4[:absent_pred]:
        assert m["per_class_f1"][k] == 0.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ua_excludes_classes_without_support(seed):
    # "anger" never occurs in y_true: its recall is undefined and left out of UA, as sklearn's
    # balanced accuracy does (labels come from both arrays there).
    y_true, y_pred = _random_case(seed, absent_pred=0, absent_true=1)
    assert "anger" in set(y_pred) and "anger" not in set(y_true)
    m = classification_metrics(y_true, y_pred, labels=LABELS4)
    present = LABELS4[:3]
    assert m["support"]["anger"] == 0
    assert m["per_class_recall"]["anger"] == 0.0
    assert m["ua"] == pytest.approx(np.mean([m["per_class_recall"][k] for k in present]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert m["ua"] == pytest.approx(skm.balanced_accuracy_score(y_true, y_pred))
        assert m["weighted_f1"] == pytest.approx(
            skm.f1_score(y_true, y_pred, labels=LABELS4, average="weighted", zero_division=0)
        )


def test_default_labels_are_sorted_union_and_values_are_json():
    m = classification_metrics(["b", "a", "c"], ["a", "a", "d"])
    assert m["labels"] == ["a", "b", "c", "d"]
    assert len(m["confusion"]) == 4
    text = json.dumps(m)  # plain Python types only
    assert json.loads(text)["wa"] == pytest.approx(1 / 3)
    for key in ("accuracy", "wa", "ua", "weighted_f1", "macro_f1"):
        assert type(m[key]) is float


def test_input_kinds_numpy_torch_and_int_labels():
    y_true = [0, 1, 2, 2, 1, 0]
    y_pred = [0, 2, 2, 2, 1, 1]
    ref = classification_metrics(y_true, y_pred, labels=[0, 1, 2])
    via_np = classification_metrics(np.array(y_true), np.array(y_pred), labels=np.arange(3))
    via_torch = classification_metrics(torch.tensor(y_true), torch.tensor(y_pred), labels=[0, 1, 2])
    via_float = classification_metrics(torch.tensor(y_true, dtype=torch.float32), y_pred, labels=[0, 1, 2])
    assert ref == via_np == via_torch == via_float
    assert list(ref["per_class_f1"]) == [0, 1, 2]
    assert all(type(k) is int for k in via_np["per_class_f1"])


def test_confusion_update_compute_split():
    y_true, y_pred = _random_case(7)
    halves = [
        confusion_matrix(y_true[:100], y_pred[:100], LABELS4),
        confusion_matrix(y_true[100:], y_pred[100:], LABELS4),
    ]
    summed = metrics_from_confusion(halves[0] + halves[1], LABELS4)
    assert summed == classification_metrics(y_true, y_pred, LABELS4)


def test_classification_errors():
    with pytest.raises(ValueError, match="y_true is empty"):
        classification_metrics([], [])
    with pytest.raises(ValueError, match="y_true has 3 elements, y_pred has 2"):
        classification_metrics([0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match=r"y_pred holds 1 label\(s\) not in labels.*'fear'"):
        classification_metrics(["neutral", "sad"], ["neutral", "fear"], labels=["neutral", "sad"])
    with pytest.raises(ValueError, match="y_true holds"):
        classification_metrics(["neutral", "joy"], ["neutral", "sad"], labels=["neutral", "sad"])
    with pytest.raises(ValueError, match="argmax"):
        classification_metrics([0, 1], np.zeros((2, 3)))
    with pytest.raises(ValueError, match="non-integer floats"):
        classification_metrics([0, 1], [0.2, 0.9])
    with pytest.raises(ValueError, match="mix"):
        classification_metrics(["a", "b"], [0, 1])
    with pytest.raises(ValueError, match="duplicates"):
        classification_metrics([0, 1], [0, 1], labels=[0, 1, 1])


# --------------------------------------------------------------------------------------------------
# CMD's MulT-style per-class F1


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("absent_pred", [0, 2])
def test_mult_f1_matches_sklearn_weighted_binary(seed, absent_pred):
    y_true, y_pred = _random_case(seed, absent_pred=absent_pred)
    r = mult_f1(y_true, y_pred, LABELS4)
    expected = {k: skm.f1_score(y_true == k, y_pred == k, average="weighted") for k in LABELS4}
    for k in LABELS4:
        assert r["per_class"][k] == pytest.approx(expected[k])
    assert r["macro"] == pytest.approx(np.mean(list(expected.values())))


def test_mult_f1_class_absent_everywhere_is_one_like_sklearn():
    y_true, y_pred = ["a", "a", "b"], ["a", "b", "b"]
    r = mult_f1(y_true, y_pred, ["a", "b", "c"])
    assert r["per_class"]["c"] == pytest.approx(
        skm.f1_score(np.array(y_true) == "c", np.array(y_pred) == "c", average="weighted")
    )
    assert r["per_class"]["c"] == 1.0


def test_mult_f1_never_predicting_class_at_meld_4class_prevalence():
    """CMD spec §5.1: a model that never predicts a class scores (1 - p) * 2(1 - p) / (2 - p).

    MELD 4-class test counts: neutral 1256, happy (joy) 402, sad 208, anger 345 (N = 2211).
    The spec quotes 0.739 / 0.773 / 0.861 for happy / anger / sad. Anger and sad match to 1e-3;
    for happy the exact prevalence 402/2211 = 0.1818 gives 0.7364 — the spec's 0.739 is the
    closed form at the rounded p = 0.18 (0.7389). The MFCC-only MELD row of CMD's Table 4 reports
    happy 0.7344, consistent with the exact value.
    """
    counts = {"neutral": 1256, "happy": 402, "sad": 208, "anger": 345}
    y_true = [k for k, n in counts.items() for _ in range(n)]
    y_pred = ["neutral"] * len(y_true)
    r = mult_f1(y_true, y_pred, list(counts))["per_class"]
    n_total = sum(counts.values())
    for k in ("happy", "sad", "anger"):
        p = counts[k] / n_total
        assert r[k] == pytest.approx((1 - p) * 2 * (1 - p) / (2 - p), abs=1e-12)
    assert r["anger"] == pytest.approx(0.773, abs=1e-3)
    assert r["sad"] == pytest.approx(0.861, abs=1e-3)
    assert r["happy"] == pytest.approx(0.736, abs=1e-3)
    assert (1 - 0.18) * 2 * (1 - 0.18) / (2 - 0.18) == pytest.approx(0.739, abs=1e-3)  # the spec's rounding
    # a true positive-class F1 would be 0 here: the secondary metric says so
    assert positive_class_f1(y_true, y_pred, list(counts))["per_class"]["happy"] == 0.0


def test_positive_class_f1_is_standard_per_class_f1():
    y_true, y_pred = _random_case(3)
    r = positive_class_f1(y_true, y_pred, LABELS4)
    np.testing.assert_allclose(
        [r["per_class"][k] for k in LABELS4],
        skm.f1_score(y_true, y_pred, labels=LABELS4, average=None, zero_division=0),
    )
    assert r["macro"] == pytest.approx(skm.f1_score(y_true, y_pred, labels=LABELS4, average="macro", zero_division=0))


# --------------------------------------------------------------------------------------------------
# CM-RoBERTa: weighted F1 re-computed from per-class F1 (spec §5, Table 2)

MELD_TEST_SUPPORT = {
    "neutral": 1256,
    "surprise": 281,
    "fear": 50,
    "sadness": 208,
    "joy": 402,
    "disgust": 68,
    "anger": 345,
}
CM_ROBERTA_TABLE2 = {
    "bimodal": {
        "neutral": 78.67,
        "surprise": 63.42,
        "fear": 28.7,
        "sadness": 42.19,
        "joy": 63.65,
        "disgust": 30.91,
        "anger": 53.56,
    },
    "text": {
        "neutral": 76.39,
        "surprise": 60.47,
        "fear": 30.5,
        "sadness": 42.21,
        "joy": 63.21,
        "disgust": 31.74,
        "anger": 45.82,
    },
}


@pytest.mark.parametrize(("row", "expected"), [("bimodal", 66.29), ("text", 63.84)])
def test_cm_roberta_weighted_f1_from_table2(row, expected):
    assert sum(MELD_TEST_SUPPORT.values()) == 2610
    got = weighted_f1_from_per_class(CM_ROBERTA_TABLE2[row], MELD_TEST_SUPPORT)
    assert round(got, 2) == pytest.approx(expected, abs=1e-9)
    assert got == pytest.approx(expected, abs=0.01)


def test_weighted_f1_from_per_class_agrees_with_classification_metrics():
    y_true, y_pred = _random_case(11)
    m = classification_metrics(y_true, y_pred, LABELS4)
    assert weighted_f1_from_per_class(m["per_class_f1"], m["support"]) == pytest.approx(m["weighted_f1"])


def test_weighted_f1_from_per_class_errors():
    with pytest.raises(ValueError, match="no support for"):
        weighted_f1_from_per_class({"a": 1.0, "b": 0.5}, {"a": 3})
    with pytest.raises(ValueError, match="total support is 0"):
        weighted_f1_from_per_class({"a": 1.0}, {"a": 0})


# --------------------------------------------------------------------------------------------------
# regression


def test_regression_hand_computed():
    # identical
    assert pcc([1, 2, 3], [1, 2, 3]) == pytest.approx(1.0)
    assert ccc([1, 2, 3], [1, 2, 3]) == pytest.approx(1.0)
    assert mae([1, 2, 3], [1, 2, 3]) == 0.0
    # shifted by 1: var = 2/3 (population), cov = 2/3 -> CCC = (4/3) / (4/3 + 1) = 4/7
    assert pcc([1, 2, 3], [2, 3, 4]) == pytest.approx(1.0)
    assert ccc([1, 2, 3], [2, 3, 4]) == pytest.approx(4 / 7)
    assert mae([1, 2, 3], [2, 3, 4]) == pytest.approx(1.0)
    # reversed: cov = -5/4, var = 5/4 each, equal means -> -1
    assert pcc([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert ccc([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert mae([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(2.0)
    # uncorrelated
    assert pcc([0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(0.0)
    assert ccc([0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(0.0)
    # scaled: y_hat = 2y, y = [0, 2]: var 1 and 4, cov 2, means 1 and 2 -> 4 / (1 + 4 + 1) = 2/3
    assert ccc([0, 2], [0, 4]) == pytest.approx(2 / 3)
    assert pcc([0, 2], [0, 4]) == pytest.approx(1.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_regression_random_vs_reference(seed):
    rng = np.random.default_rng(seed)
    y = rng.normal(size=300)
    y_hat = 0.7 * y + rng.normal(scale=0.5, size=300) + 0.3
    assert pcc(y, y_hat) == pytest.approx(np.corrcoef(y, y_hat)[0, 1])
    cov = np.cov(y, y_hat, ddof=0)[0, 1]
    assert ccc(y, y_hat) == pytest.approx(2 * cov / (y.var() + y_hat.var() + (y.mean() - y_hat.mean()) ** 2))
    assert mae(y, y_hat) == pytest.approx(skm.mean_absolute_error(y, y_hat))
    assert ccc(torch.tensor(y), torch.tensor(y_hat)) == pytest.approx(ccc(y, y_hat))


def test_regression_constant_inputs():
    with pytest.warns(RuntimeWarning, match="constant"):
        assert math.isnan(pcc([1, 2, 3], [5, 5, 5]))
    assert ccc([1, 2, 3], [5, 5, 5]) == 0.0  # defined: no covariance
    assert ccc([2, 2], [2, 2]) == 1.0  # both constant and equal: perfect agreement
    assert ccc([2, 2], [3, 3]) == 0.0


def test_regression_errors():
    with pytest.raises(ValueError, match="y_true has 3 elements, y_pred has 2"):
        pcc([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="empty"):
        mae([], [])
    with pytest.raises(ValueError, match="non-finite"):
        ccc([1.0, float("nan")], [1.0, 2.0])
    with pytest.raises(ValueError, match="1-D"):
        ccc(np.zeros((2, 2)), np.zeros((2, 2)))


def test_binarized_metrics_uar_war():
    # thesis Ch.3: high if >= 0. true: low low high high high; pred: low high high high low
    y = [-0.5, -0.2, 0.0, 0.4, 0.9]
    y_hat = [-0.3, 0.1, 0.2, 0.0, -0.1]
    r = binarized_metrics(y, y_hat)
    assert r["labels"] == ["low", "high"]
    assert r["confusion"] == [[1, 1], [1, 2]]
    assert r["war"] == pytest.approx(3 / 5)
    assert r["uar"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert r["support"] == {"low": 2, "high": 3}
    shifted = binarized_metrics(y, y_hat, threshold=0.5)
    assert shifted["support"] == {"low": 4, "high": 1}
    json.dumps(r)
    # thesis Ch.5's weighted F1 (CMU-MOSI binary sentiment): per-class F1 weighted by true support
    tb, pb = np.asarray(y) >= 0, np.asarray(y_hat) >= 0
    assert r["weighted_f1"] == pytest.approx(skm.f1_score(tb, pb, average="weighted"))
    probs = np.random.default_rng(0).uniform(0, 1, 50)
    labels = (np.random.default_rng(1).uniform(0, 1, 50) > 0.4).astype(float)
    m = regression_metrics(labels, probs, threshold=0.5)
    assert m["weighted_f1"] == pytest.approx(skm.f1_score(labels, probs >= 0.5, average="weighted"))
    assert m["war"] == pytest.approx(skm.accuracy_score(labels, probs >= 0.5))


# --------------------------------------------------------------------------------------------------
# aggregation and formatting


def test_aggregate_mean_std_nested():
    runs = [
        {"wa": 0.70, "ua": 0.60, "per_class_f1": {"a": 0.5, "b": 0.9}, "labels": ["a", "b"], "name": "r1"},
        {"wa": 0.80, "ua": 0.65, "per_class_f1": {"a": 0.7, "b": 0.8}, "labels": ["a", "b"], "name": "r2"},
        {"wa": 0.75, "ua": 0.70, "per_class_f1": {"a": 0.6, "b": 0.7}, "labels": ["a", "b"], "name": "r3"},
    ]
    agg = aggregate(runs)
    assert set(agg) == {"wa", "ua", "per_class_f1"}
    assert agg["wa"] == {"mean": pytest.approx(0.75), "std": pytest.approx(np.std([0.7, 0.8, 0.75], ddof=1)), "n": 3}
    assert agg["per_class_f1"]["b"]["mean"] == pytest.approx(0.8)
    assert agg["per_class_f1"]["a"]["std"] == pytest.approx(0.1)
    json.dumps(agg)


def test_aggregate_of_classification_metrics_and_single_run():
    runs = [classification_metrics(*_random_case(s), labels=LABELS4) for s in range(3)]
    agg = aggregate(runs)
    assert agg["weighted_f1"]["n"] == 3
    assert agg["support"]["happy"]["n"] == 3
    assert "confusion" not in agg and "labels" not in agg
    one = aggregate(runs[:1])
    assert one["wa"] == {"mean": runs[0]["wa"], "std": 0.0, "n": 1}


def test_aggregate_errors():
    with pytest.raises(ValueError, match="no runs"):
        aggregate([])
    with pytest.raises(ValueError, match=r"'ua' is missing from run\(s\) \[1\]"):
        aggregate([{"wa": 0.1, "ua": 0.2}, {"wa": 0.3}])
    with pytest.raises(ValueError, match=r"'per_class_f1.b' is missing"):
        aggregate([{"per_class_f1": {"a": 1.0, "b": 0.5}}, {"per_class_f1": {"a": 1.0}}])
    with pytest.raises(ValueError, match="'wa' is a number in some runs"):
        aggregate([{"wa": 0.1}, {"wa": "n/a"}])


def test_format_mean_std():
    assert format_mean_std(0.77142, 0.00751) == "0.7714 (0.0075)"
    assert format_mean_std(0.8341, 0.0047) == "0.8341 (0.0047)"
    assert format_mean_std(66.2868, 0.5, digits=2) == "66.29 (0.50)"
