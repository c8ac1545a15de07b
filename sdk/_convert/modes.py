"""Train/eval flags: change them for a while and give every module its own flag back."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn


@contextlib.contextmanager
def kept_modes(model: nn.Module, eval_now: bool = False) -> Iterator[nn.Module]:
    """Restore each submodule's train/eval flag on exit (a user's BatchNorm frozen in eval
    inside a training model stays frozen); with `eval_now`, run the body in eval mode."""
    flags = [(m, m.training) for m in model.modules()]
    try:
        if eval_now:
            model.eval()
        yield model
    finally:
        for module, training in flags:
            module.training = training
