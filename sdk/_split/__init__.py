"""Edge-cloud split: `SplitConfig`, and the compressed link that runs the real offload codecs in
the forward pass (and on the gradient in training)."""

from ponder._split.config import SplitConfig
from ponder._split.link import LinkBytes, SplitLink, bytes_per_sample, split_link
from ponder._split.program import SplitModel, split_model

__all__ = [
    "LinkBytes",
    "SplitConfig",
    "SplitLink",
    "SplitModel",
    "bytes_per_sample",
    "split_link",
    "split_model",
]
