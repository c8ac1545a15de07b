"""Edge-cloud split: `SplitConfig`, and the compressed link that runs the real offload codecs in
the forward pass (and on the gradient in training)."""

from ponder._split.config import SplitConfig
from ponder._split.link import LinkBytes, SplitLink, bytes_per_sample, split_link

__all__ = ["LinkBytes", "SplitConfig", "SplitLink", "bytes_per_sample", "split_link"]
