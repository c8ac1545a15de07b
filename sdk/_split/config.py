"""`SplitConfig` and its conversion: an edge-cloud split after one block of a transformer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from ponder._convert.blocks import find_blocks
from ponder._convert.convert import CONVERTERS
from ponder._convert.surgery import attach_sidecar, get_module
from ponder._core.config import Config, check_choice
from ponder._core.errors import ConfigError
from ponder._split.link import ATTR, SplitLink
from ponder.runtime import list_codecs

SELECTORS = {
    "cls": "the attention the pooling token (class token; GPT-2: last token) pays each token",
    "received": "the attention each token receives from all real tokens",
}


@dataclass(frozen=True)
class SplitConfig(Config):
    """Where the device hands over to the cloud, and how the tokens travel.

    block: index of the last block that runs on the device (0-based; the cloud runs the rest);
        None: no split.
    keep: share of each sample's real tokens sent (at least one). 1.0 sends every real token;
        below 1 the device keeps the pooling token (the class token; GPT-2's last token) and
        the top-ranked others, and the model runs as `ponder.split_model(model, inputs)`.
    selector: how tokens are ranked at the split block's attention (heads averaged): "cls",
        the attention the pooling token pays them (EViT's class-token attention); "received",
        the attention they receive from all real tokens.
    codec: the activation codec (`ponder list codecs`): fp32, fp16, int8, int4, int4-g32.
    zstd_level: entropy coding of each payload (1-22, None: never); kept only where it saves
        at least 10%.
    blocks: a container path or explicit block paths; None finds them (as for exits).
    """

    kind = "split"
    block: int | None = None
    keep: float = 1.0
    selector: str = "cls"
    codec: str = "int8"
    zstd_level: int | None = 1
    blocks: str | tuple[str, ...] | None = None

    def __post_init__(self):
        check_choice("codec", self.codec, list_codecs())
        if not 0.0 < self.keep <= 1.0:
            raise ConfigError(f"keep must be in (0, 1], got {self.keep}")
        check_choice("selector", self.selector, SELECTORS)
        if self.zstd_level is not None and not 1 <= self.zstd_level <= 22:
            raise ConfigError(f"zstd_level must be 1..22 or None, got {self.zstd_level}")
        if self.block is not None and self.block < 0:
            raise ConfigError(f"block must be >= 0, got {self.block}")
        if isinstance(self.blocks, list):
            object.__setattr__(self, "blocks", tuple(self.blocks))


@CONVERTERS.register("split")
def _convert(model: nn.Module, config: SplitConfig, example_inputs: Any) -> bool:
    existing = getattr(model, ATTR, None)
    if existing is not None:
        if existing.config == config:
            return False
        raise ConfigError(
            f"this model already has a split ({existing.config}); convert a fresh copy instead"
        )
    if config.block is None:
        return False
    blocks = find_blocks(model, config.blocks)
    last = len(blocks.paths) - 2  # the cloud half must run at least one block
    if config.block > last:
        raise ConfigError(
            f"block={config.block}, but this model has {len(blocks.paths)} blocks: split after "
            f"block 0..{last} so the cloud half runs at least one"
        )
    spec = {"block": config.block, "block_path": blocks.paths[config.block]}
    link = SplitLink(config, spec)
    attach_sidecar(model, ATTR, link)
    link.attach(model, get_module(model, spec["block_path"]))
    return True
