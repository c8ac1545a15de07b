"""Exit rules against scores worked out by hand, and the properties every threshold relies on:
stateless scores never drop when an exit grows more confident, and stay in [0, 1]."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ponder import ConfigError, exit_rule, list_exit_rules
from ponder._core.rules import offline_scores, select


def _logp(*rows: list[float]) -> np.ndarray:
    return np.log(np.array(rows, dtype=np.float64))  # [b, C]


def _score(name: str, logp: np.ndarray, **kwargs) -> np.ndarray:
    rule = exit_rule(name, **kwargs)
    scores, _ = rule.step(logp, rule.start(len(logp)))
    return scores


# Three exits' probabilities for one sample (C=3), used by the rows below and the ZTW tests.
P0, P1, P2 = [0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.5, 0.25, 0.25]


def test_max_prob_is_the_largest_probability():
    got = _score("max_prob", _logp(P0, [0.2, 0.5, 0.3], [1 / 3, 1 / 3, 1 / 3]))
    np.testing.assert_allclose(got, [0.7, 0.5, 1 / 3], rtol=1e-12)


def test_margin_is_top1_minus_top2():
    # 0.7 - 0.2; 0.5 - 0.3 (top-2 is not the second column); a uniform row has no margin
    got = _score("margin", _logp(P0, [0.2, 0.5, 0.3], [1 / 3, 1 / 3, 1 / 3]))
    np.testing.assert_allclose(got, [0.5, 0.2, 0.0], rtol=1e-12, atol=1e-15)


def test_entropy_score_is_one_minus_normalised_entropy():
    # H(0.7, 0.2, 0.1) = -(0.7 ln 0.7 + 0.2 ln 0.2 + 0.1 ln 0.1)
    #                  = 0.2496725 + 0.3218876 + 0.2302585 = 0.8018186 nats; ln 3 = 1.0986123
    #   -> 1 - 0.8018186 / 1.0986123 = 0.2701533
    # H(0.2, 0.5, 0.3) = 0.3218876 + 0.3465736 + 0.3611918 = 1.0296530 -> 0.0627694
    three = _score("entropy", _logp(P0, [0.2, 0.5, 0.3], [1 / 3, 1 / 3, 1 / 3]))
    np.testing.assert_allclose(three, [0.2701533, 0.0627694, 0.0], rtol=1e-6, atol=1e-12)
    # two classes: H(0.9, 0.1) = 0.0948245 + 0.2302585 = 0.3250830; ln 2 = 0.6931472 -> 0.5310044
    np.testing.assert_allclose(_score("entropy", _logp([0.9, 0.1])), [0.5310044], rtol=1e-6)


def test_a_certain_exit_scores_one_on_every_stateless_rule():
    certain = np.array([[0.0, -np.inf, -np.inf]])  # all mass on class 0
    for name in ("max_prob", "entropy", "margin"):
        assert _score(name, certain) == pytest.approx([1.0], abs=1e-12), name


def test_rules_normalise_logits_shifted_by_a_constant():
    logp, shifted = _logp(P0), _logp(P0) + 5.0  # softmax is the same
    for name in ("max_prob", "entropy", "margin", "ztw"):
        np.testing.assert_allclose(_score(name, shifted), _score(name, logp), rtol=1e-12)


def test_patience_counts_agreeing_exits_and_restarts_at_one():
    # predictions per exit (rows) for three samples (columns); one-hot-ish log-probs
    preds = np.array([[0, 0, 2],
                      [0, 1, 2],
                      [0, 1, 1],
                      [0, 0, 1]])  # fmt: skip
    logp = np.log(np.where(np.eye(3)[preds], 0.8, 0.1))  # [K=4, N=3, C=3]
    scores, got_preds = offline_scores(exit_rule("patience"), logp)
    # sample 0 always agrees: 1, 2, 3, 4; sample 1 switches 0 -> 1 -> 1 -> 0: 1, 1, 2, 1;
    # sample 2 switches 2 -> 2 -> 1 -> 1: 1, 2, 1, 2
    np.testing.assert_array_equal(scores, [[1, 1, 1], [2, 1, 2], [3, 2, 1], [4, 1, 2]])
    np.testing.assert_array_equal(got_preds, preds)


def test_patience_state_follows_the_samples_that_keep_running():
    rule = exit_rule("patience")
    logp = np.log(np.where(np.eye(2)[[0, 1, 0]], 0.9, 0.1))  # [3, 2]: classes 0, 1, 0
    state = rule.start(3)
    rule.step(logp, state)
    state = select(state, np.array([False, True, True]))  # sample 0 left at this exit
    scores, _ = rule.step(logp[1:], state)  # samples 1 and 2 predict the same again
    np.testing.assert_array_equal(scores, [2, 2])


def test_ztw_scores_the_normalised_geometric_mean_of_the_exits_so_far():
    rule = exit_rule("ztw")
    assert not rule.stateless
    state = rule.start(1)
    steps = [rule.step(_logp(p), state) for p in (P0, P1, P2)]
    scores = [float(s[0]) for s, _ in steps]
    # exit 0: the ensemble of one exit is that exit: 0.7 (class 0)
    # exit 1: sqrt(p0 * p1) = sqrt(0.07), sqrt(0.12), sqrt(0.03) = 0.2645751, 0.3464102, 0.1732051
    #   sum 0.7841904 -> [0.3373864, 0.4417424, 0.2208712]: 0.4417424 (class 1)
    # exit 2: cbrt(p0 * p1 * p2) = cbrt(0.035), cbrt(0.03), cbrt(0.0075)
    #   = 0.3271066, 0.3107233, 0.1957434; sum 0.8335733 -> 0.3924150 (class 0 again)
    np.testing.assert_allclose(scores, [0.7, 0.4417424, 0.3924150], rtol=1e-6)
    np.testing.assert_allclose(np.exp(steps[1][1][0]), [0.3373864, 0.4417424, 0.2208712], rtol=1e-6)
    assert [int(lp.argmax()) for _, lp in steps] == [0, 1, 0]


def test_ztw_uses_the_models_ensemble_as_it_is_when_ensembled():
    # the model's learned ensemble is already in the exit output: score its largest probability,
    # keep nothing between exits, predict with it unchanged
    rule = exit_rule("ztw", ensembled=True)
    assert rule.stateless
    state = rule.start(1)
    for p, expected in ((P0, 0.7), (P1, 0.6), (P2, 0.5)):
        score, logp = rule.step(_logp(p), state)
        assert score == pytest.approx([expected], rel=1e-12)
        np.testing.assert_array_equal(logp, _logp(p))


def test_rules_are_listed_and_unknown_names_refused():
    assert set(list_exit_rules()) == {"max_prob", "entropy", "margin", "patience", "ztw"}
    assert [exit_rule(n).stateless for n in ("max_prob", "entropy", "margin", "patience")] == [
        True,
        True,
        True,
        False,
    ]
    with pytest.raises(ConfigError, match="max_prob"):
        exit_rule("confidence")


STATELESS = [("max_prob", False), ("entropy", False), ("margin", False), ("ztw", True)]
# Probabilities of 2..6 classes (strictly positive, so every log is finite).
_probs = st.lists(st.floats(1e-3, 1.0), min_size=2, max_size=6).map(lambda w: np.array(w) / sum(w))
# No deadline: each example takes microseconds, but on a busy shared machine one can stall.
_settings = settings(deadline=None)


@pytest.mark.parametrize(("name", "ensembled"), STATELESS)
@_settings
@given(p=_probs, alpha=st.floats(0.0, 1.0))
def test_scores_never_drop_when_mass_moves_to_the_top_class(name, ensembled, p, alpha):
    # q = (1 - alpha) p + alpha * onehot(top): every top-k sum of q is (1 - alpha) S_k + alpha
    # >= S_k, so q majorises p: max-prob and margin cannot fall, and neither can 1 - H/log C
    # (entropy is Schur-concave).
    q = (1 - alpha) * p
    q[p.argmax()] += alpha
    with np.errstate(divide="ignore"):  # alpha = 1 leaves zeros: log 0 = -inf is fine
        before, after = (_score(name, np.log(d)[None], ensembled=ensembled)[0] for d in (p, q))
    assert after >= before - 1e-12


@pytest.mark.parametrize("name", ["max_prob", "entropy", "margin"])
@_settings
@given(logits=st.lists(st.floats(-50.0, 50.0), min_size=2, max_size=6))
def test_scores_lie_between_zero_and_one(name, logits):
    score = _score(name, np.array([logits]))[0]
    # 1e-12: a uniform row's entropy sums to log C within a few float64 ulps (C=5 gives -2e-16)
    assert -1e-12 <= score <= 1.0 + 1e-12
