"""Exit rules: per-exit confidence scores from an exit's log-probabilities (numpy, torch-free).

A rule scores each sample at each exit; the sample leaves at exit k when its score is at least
that exit's threshold. Scores grow with confidence for every rule, so thresholds point one way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ponder._core.errors import ConfigError
from ponder._core.registry import Registry

EXIT_RULES: Registry[type[ExitRule]] = Registry("exit rule")

State = dict[str, np.ndarray]


@dataclass
class ExitRule:
    """Base class. `step` scores one exit for the samples still running and may update `state`.

    `ensembled` says whether the exit outputs are already ZTW ensembles (then rules that build an
    ensemble themselves use the outputs as they are).
    """

    name: ClassVar[str]
    description: ClassVar[str]
    ensembled: bool = False

    @property
    def stateless(self) -> bool:
        """True when a score depends on this exit's output only (a runtime may then skip
        scoring an exit that nobody may leave at)."""
        return False

    def start(self, batch: int) -> State:
        return {}

    def step(self, logp: np.ndarray, state: State) -> tuple[np.ndarray, np.ndarray]:
        """logp [b, C] -> (scores [b], log-probs to predict with [b, C])."""
        raise NotImplementedError


def _probs(logp: np.ndarray) -> np.ndarray:
    # float64: confident exits have max-probabilities within 1e-8 of 1, which float32 rounds to
    # exactly 1.0 and so ties them (seen on MNIST-1D ZTW ensembles: half the sweep collapsed).
    logp = logp.astype(np.float64)
    e = np.exp(logp - logp.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@EXIT_RULES.register("max_prob")
@dataclass
class MaxProb(ExitRule):
    name: ClassVar[str] = "max_prob"
    description: ClassVar[str] = "largest softmax probability (SDN, DeeBERT)"

    stateless = True  # type: ignore[assignment]

    def step(self, logp, state):
        return _probs(logp).max(axis=-1), logp


@EXIT_RULES.register("entropy")
@dataclass
class Entropy(ExitRule):
    name: ClassVar[str] = "entropy"
    description: ClassVar[str] = "1 - entropy / log(classes), so 1 is certain (BranchyNet)"

    stateless = True  # type: ignore[assignment]

    def step(self, logp, state):
        p = _probs(logp)
        entropy = -(p * np.log(np.clip(p, 1e-30, None))).sum(axis=-1)
        return 1.0 - entropy / np.log(logp.shape[-1]), logp


@EXIT_RULES.register("margin")
@dataclass
class Margin(ExitRule):
    name: ClassVar[str] = "margin"
    description: ClassVar[str] = "top-1 minus top-2 softmax probability"

    stateless = True  # type: ignore[assignment]

    def step(self, logp, state):
        top2 = np.sort(_probs(logp), axis=-1)[:, -2:]  # [b, 2]
        return top2[:, 1] - top2[:, 0], logp


@EXIT_RULES.register("patience")
@dataclass
class Patience(ExitRule):
    name: ClassVar[str] = "patience"
    description: ClassVar[str] = (
        "number of consecutive exits, this one included, that agree on the class (PABEE; "
        "PABEE's patience t is threshold t+1)"
    )

    def start(self, batch):
        return {"pred": np.full(batch, -1), "count": np.zeros(batch)}

    def step(self, logp, state):
        pred = logp.argmax(axis=-1)
        state["count"] = np.where(pred == state["pred"], state["count"] + 1, 1.0)
        state["pred"] = pred
        return state["count"].copy(), logp


@EXIT_RULES.register("ztw")
@dataclass
class ZTWEnsemble(ExitRule):
    name: ClassVar[str] = "ztw"
    description: ClassVar[str] = (
        "largest probability of the geometric ensemble of all exits so far (ZTW); uses the "
        "model's learned ensemble when it has one, else an unweighted one"
    )

    @property
    def stateless(self) -> bool:
        return self.ensembled  # the model's learned ensemble: nothing to keep between exits

    def start(self, batch):
        return {"sum": np.zeros((batch, 0)), "n": np.zeros(batch)}

    def step(self, logp, state):
        if not self.ensembled:
            state["sum"] = logp if state["sum"].shape[1] == 0 else state["sum"] + logp
            state["n"] = state["n"] + 1
            mean = state["sum"] / state["n"][:, None]
            logp = log_softmax(mean).astype(logp.dtype)
        return _probs(logp).max(axis=-1), logp


def log_softmax(x: np.ndarray) -> np.ndarray:
    """Log-probabilities over the last axis (stable: the max is subtracted first)."""
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def exit_rule(name: str, *, ensembled: bool = False) -> ExitRule:
    """Create a registered exit rule by name (see `list_exit_rules()`)."""
    return EXIT_RULES.get(name)(ensembled=ensembled)


def list_exit_rules() -> dict[str, str]:
    """Registered exit rules and what their scores mean."""
    return {name: EXIT_RULES.get(name).description for name in EXIT_RULES.names()}


def select(state: State, keep: np.ndarray) -> State:
    """The state of the samples that keep running (`keep` is a boolean mask over the batch)."""
    return {k: v[keep] for k, v in state.items()}


def offline_scores(rule: ExitRule, logp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Score every exit for every sample at once: logp [K, N, C] -> (scores [K, N], preds [K, N])."""
    state = rule.start(logp.shape[1])
    scores, preds = [], []
    for k in range(logp.shape[0]):
        s, pred_logp = rule.step(logp[k], state)
        scores.append(s)
        preds.append(pred_logp.argmax(axis=-1))
    return np.stack(scores), np.stack(preds)


def per_exit_thresholds(value: object, early_exits: int) -> np.ndarray:
    """[early_exits] thresholds from one number (shared by every early exit) or one per exit."""
    t = np.asarray(value, dtype=np.float64)
    if t.ndim == 0 or t.shape == (1,):
        t = np.full(early_exits, float(t.reshape(-1)[0]))
    if t.shape != (early_exits,) or np.any(np.isnan(t)):
        shown = t.tolist() if t.size < 20 else f"an array of shape {t.shape}"
        raise ConfigError(
            f"thresholds must be a number or {early_exits} numbers (one per early exit, none "
            f"NaN), got {shown!r}; use +inf to switch an exit off."
        )
    return t
