"""Metrics against hand computation and against scikit-learn's formulas written out."""

from __future__ import annotations

import math

import numpy as np
import pytest
from dslc.runtime.metrics import BLEU, METRICS, bleu, make_metric, to_classes

from dslc.errors import ConfigError, DataError

Y_TRUE = [0, 0, 0, 1, 1, 2, 2]
Y_PRED = [0, 0, 1, 1, 3, 2, 0]  # class 3 is only ever predicted


def result(name, pred, true, **kw):
    m = make_metric(name, **kw)
    m.update(np.asarray(pred), np.asarray(true))
    return m.result()


def test_by_hand():
    # per class (0, 1, 2, 3): tp = 2, 1, 1, 0; predicted 3, 2, 1, 1; true 3, 2, 2, 0
    assert result("accuracy", Y_PRED, Y_TRUE) == pytest.approx(4 / 7)
    assert result("precision", Y_PRED, Y_TRUE) == pytest.approx((2 / 3 + 1 / 2 + 1 + 0) / 4)
    assert result("recall", Y_PRED, Y_TRUE) == pytest.approx((2 / 3 + 1 / 2 + 1 / 2 + 0) / 4)
    f1 = (2 * 2 / (2 * 2 + 1 + 1) + 2 / (2 + 1 + 1) + 2 / (2 + 0 + 1) + 0) / 4
    assert result("f1", Y_PRED, Y_TRUE) == pytest.approx(f1)


def sklearn_macro(y_true, y_pred):
    """precision_recall_fscore_support(average='macro', zero_division=0), written out."""
    labels = sorted(set(y_true) | set(y_pred))
    ps, rs, fs = [], [], []
    for c in labels:
        tp = sum(t == c and p == c for t, p in zip(y_true, y_pred))
        pred_pos = sum(p == c for p in y_pred)
        true_pos = sum(t == c for t in y_true)
        prec = tp / pred_pos if pred_pos else 0.0
        rec = tp / true_pos if true_pos else 0.0
        ps.append(prec)
        rs.append(rec)
        fs.append(2 * prec * rec / (prec + rec) if prec + rec else 0.0)
    return np.mean(ps), np.mean(rs), np.mean(fs)


@pytest.mark.parametrize("seed", range(5))
def test_macro_scores_match_sklearn_formulas_and_batching(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 6, 200)
    pred = np.where(rng.random(200) < 0.6, y, rng.integers(0, 7, 200))
    want = sklearn_macro(y.tolist(), pred.tolist())
    for name, value in zip(("precision", "recall", "f1"), want):
        m = make_metric(name)
        for i in range(0, 200, 32):  # accumulate over batches
            m.update(pred[i : i + 32], y[i : i + 32])
        assert m.result() == pytest.approx(value, abs=1e-12)
    assert result("accuracy", pred, y) == pytest.approx(np.mean(pred == y))


def test_logits_probabilities_and_one_hot_labels():
    logits = np.eye(4)[Y_PRED] * 3.0 - 1.0
    assert result("f1", logits, Y_TRUE) == result("f1", Y_PRED, Y_TRUE)
    one_hot = np.eye(4)[Y_TRUE]
    assert result("accuracy", logits, one_hot) == pytest.approx(4 / 7)
    # sequence outputs: [B, T, V] logits against [B, T] targets
    seq_logits = np.zeros((2, 3, 5))
    seq_logits[..., 2] = 1.0
    assert result("accuracy", seq_logits, [[2, 2, 0], [2, 1, 2]]) == pytest.approx(4 / 6)


def test_binary_scores():
    y = [0, 1, 1, 0]
    assert result("accuracy", [0.2, 0.7, 0.4, 0.1], y) == 0.75  # probabilities: > 0.5
    assert result("accuracy", [[-1.5], [2.0], [0.5], [-0.2]], y) == 1.0  # logits: > 0
    assert result("accuracy", [[0.9], [0.8], [0.6], [0.3]], [[0.0], [1.0], [1.0], [0.0]]) == 0.75


def test_to_classes_shape_mismatch():
    with pytest.raises(DataError) as e:
        to_classes(np.zeros((4, 3)), np.zeros(5))
    assert e.value.message == "predictions of shape [4, 3] do not match labels of shape [5]"


def test_num_classes_does_not_change_the_macro_average():
    # like sklearn with labels=None: classes absent from labels and predictions are left out
    assert result("f1", Y_PRED, Y_TRUE, num_classes=10) == result("f1", Y_PRED, Y_TRUE)


def test_empty_metrics():
    assert make_metric("accuracy").result() == 0.0
    assert make_metric("f1").result() == 0.0
    assert math.isnan(make_metric("mse").result())
    assert math.isnan(make_metric("perplexity").result())


def test_reset():
    m = make_metric("accuracy")
    m.update([1, 1], [0, 0])
    m.reset()
    m.update([1], [1])
    assert m.result() == 1.0


def test_perplexity_from_logits_and_from_sums():
    m = make_metric("perplexity")
    m.update(np.zeros((2, 3, 4)), np.zeros((2, 3), np.int64))  # uniform over 4 tokens
    assert m.result() == pytest.approx(4.0)
    logp = np.log(np.array([[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]]))
    m = make_metric("perplexity")
    m.update(logp[:1], [0])
    m.update(logp[1:], [2])  # log-probabilities are their own log-softmax
    assert m.result() == pytest.approx(math.exp(-(math.log(0.5) + math.log(0.8)) / 2))
    m2 = make_metric("perplexity")
    m2.update(np.exp(logp), [0, 2])  # probabilities, as a softmax output gives
    assert m2.result() == pytest.approx(m.result())
    m = make_metric("perplexity")
    m.update_loss(3.0, 2)
    m.update_loss(1.0, 2)
    assert m.result() == pytest.approx(math.exp(1.0))
    assert not m.higher_is_better
    with pytest.raises(DataError, match=r"do not match targets of shape \[3\]"):
        m.update(np.zeros((2, 4)), [0, 1, 2])


def test_mse_and_mae():
    pred = np.array([[1.0], [2.0], [4.0]])
    y = np.array([1.5, 2.0, 2.0])  # [N, 1] predictions against [N] labels
    assert result("mse", pred, y) == pytest.approx((0.25 + 0 + 4) / 3)
    assert result("mae", pred, y) == pytest.approx((0.5 + 0 + 2) / 3)
    m = make_metric("mse")
    m.update([[1.0, 2.0]], [[0.0, 0.0]])
    m.update([[3.0, 0.0]], [[0.0, 0.0]])
    assert m.result() == pytest.approx((1 + 4 + 9 + 0) / 4)
    with pytest.raises(DataError, match=r"metric mse: predictions of shape \[2\] do not match"):
        m.update([1.0, 2.0], [1.0, 2.0, 3.0])


# --- BLEU ---------------------------------------------------------------------------------

# the example of Papineni et al. (2002), as in NLTK's documentation of corpus_bleu
HYP1 = "It is a guide to action which ensures that the military always obeys the commands of the party".split()  # noqa: E501
REF1A = "It is a guide to action that ensures that the military will forever heed Party commands".split()  # noqa: E501
REF1B = "It is the guiding principle which guarantees the military forces always being under the command of the Party".split()  # noqa: E501
REF1C = "It is the practical guide for the army always to heed the directions of the party".split()
HYP2 = "he read the book because he was interested in world history".split()
REF2A = "he was interested in world history because he read the book".split()


def test_bleu_known_corpus_value():
    assert bleu([[REF1A, REF1B, REF1C], [REF2A]], [HYP1, HYP2]) == pytest.approx(
        0.5920778868801042, abs=1e-12
    )
    assert bleu([[REF1A, REF1B, REF1C]], [HYP1]) == pytest.approx(0.5045666840058485, abs=1e-12)


def test_bleu_by_hand_with_brevity_penalty():
    hyp = "the cat sat on the mat".split()
    ref = "the cat sat on the red mat".split()
    # clipped matches / totals: 1-grams 6/6, 2-grams 4/5, 3-grams 3/4, 4-grams 2/3
    geo = (1 * 4 / 5 * 3 / 4 * 2 / 3) ** 0.25
    bp = math.exp(1 - 7 / 6)
    assert bleu([ref], [hyp]) == pytest.approx(bp * geo)
    assert bleu([[ref]], [hyp]) == pytest.approx(bp * geo)  # a list of one reference
    assert bleu(["the cat sat on the red mat"], ["the cat sat on the mat"]) == pytest.approx(
        bp * geo
    )


def test_bleu_clipping_closest_reference_and_zero():
    # "the the the the" against "the cat": 1-gram matches clip at 1
    m = BLEU(max_n=1)
    m.update([["the"] * 4], [[["the", "cat"], ["a", "b", "c", "d", "e"]]])
    assert m.matches == [1] and m.totals == [4]
    assert m.ref_len == 5  # |4 - 5| < |4 - 2|
    assert bleu([["a", "b", "c", "d"]], [["w", "x", "y", "z"]]) == 0.0
    assert bleu([[1, 2, 3, 4, 5]], [[1, 2, 3, 4, 5]]) == 1.0  # token ids work too
    assert make_metric("bleu").result() == 0.0
    with pytest.raises(DataError, match="bleu: 2 hypotheses but 1 references"):
        bleu([["a"]], [["a"], ["b"]])


def test_bleu_accumulates_like_one_corpus():
    m = make_metric("bleu")
    m.update([HYP1], [[REF1A, REF1B, REF1C]])
    m.update([HYP2], [[REF2A]])
    assert m.result() == pytest.approx(0.5920778868801042, abs=1e-12)


def test_unknown_metric_lists_the_known_ones():
    with pytest.raises(ConfigError) as e:
        make_metric("acuracy")
    assert e.value.message == (
        "unknown metric `acuracy`; known metrics: accuracy, bleu, f1, mae, mse, perplexity, "
        "precision, recall"
    )
    assert e.value.hint == "did you mean `accuracy`?"
    assert sorted(METRICS) == ["accuracy", "bleu", "f1", "mae", "mse", "perplexity",
                               "precision", "recall"]  # fmt: skip
    assert make_metric("F1").name == "f1"
