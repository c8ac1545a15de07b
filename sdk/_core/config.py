"""Config base: plain-value dataclasses that validate themselves and round-trip to JSON."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, ClassVar

from ponder._core.errors import ConfigError
from ponder._core.registry import Registry

CONFIGS: Registry[type[Config]] = Registry("config type")


class Config:
    """Mixin for frozen config dataclasses; subclasses set `kind` and `version`."""

    kind: ClassVar[str]
    version: ClassVar[int] = 1

    def __init_subclass__(cls, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        if "kind" in cls.__dict__:
            CONFIGS.register(cls.kind)(cls)

    def to_dict(self) -> dict[str, Any]:
        fields = {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}
        return {"type": self.kind, "version": self.version, **fields}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        data = dict(data)
        kind, version = data.pop("type", cls.kind), data.pop("version", cls.version)
        if kind != cls.kind:
            raise ConfigError(f"expected a {cls.kind!r} config, got type {kind!r}")
        if version > cls.version:
            raise ConfigError(
                f"{cls.kind!r} config version {version} is newer than this ponder understands "
                f"({cls.version}); upgrade ponder to read it"
            )
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(
                f"unknown {cls.kind!r} config fields {unknown}; known: {sorted(names)}"
            )
        return cls(**{k: _tuples(v, hints[k]) for k, v in data.items()})


def config_from_dict(data: dict[str, Any]) -> Config:
    """Rebuild any registered config from its `to_dict()` form."""
    if "type" not in data:
        raise ConfigError(f"config dict has no 'type' field: {data}")
    return CONFIGS.get(data["type"]).from_dict(data)


def check_choice(name: str, value: Any, choices: typing.Iterable[Any]) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise ConfigError(f"{name}={value!r} is not one of {', '.join(map(repr, choices))}")


def _plain(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def _tuples(value: Any, hint: Any) -> Any:
    """Lists from JSON become tuples where the field is declared as a tuple."""
    if isinstance(value, list) and "tuple" in str(hint):
        return tuple(_tuples(v, None) for v in value)
    return value
