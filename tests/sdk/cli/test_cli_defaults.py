"""The commands repeat the defaults and choices of the functions they call, so that building the
CLI imports no torch (`ponder --help` stays fast). These tests keep the two from drifting apart:
every option's default is the function's, and every choice list is the registry's or constant's."""

from __future__ import annotations

import inspect

import click
import pytest

import ponder
from ponder._calibration.checkpoint import evaluate_checkpoint
from ponder._cli.demo import run_demo
from ponder._cli.main import main
from ponder._cli.pretrained import convert_pretrained
from ponder._cli.runtime import BACKENDS
from ponder._early_exit.config import HEADS, STYLES
from ponder._sparsity.critical import MODES
from ponder._sparsity.report import run_sparsity
from ponder.export import TARGETS, export_checkpoint
from ponder.export._stages.plan import MOE_MODES
from ponder.runtime import list_backends, run_requests
from ponder.runtime._engine.profile import profile

CALLS = {
    "convert": convert_pretrained,
    "demo": run_demo,
    "evaluate": evaluate_checkpoint,
    "sparsity": run_sparsity,
    "export": export_checkpoint,
    "profile": profile,
    "run": run_requests,
}


def _options(command: click.Command) -> dict[str, click.Parameter]:
    return {p.name: p for p in command.params}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_option_defaults_are_the_functions_defaults(name):
    command, function = main.commands[name], CALLS[name]
    defaults = {
        k: p.default
        for k, p in inspect.signature(function).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    compared = 0
    for option_name, option in _options(command).items():
        default = option.default if option.required is False else None
        if option_name in defaults and _given(default):
            assert default == defaults[option_name], (name, option_name)
            compared += 1
    assert compared, f"ponder {name}: no option default compared"


def _given(default: object) -> bool:
    """A default was set (click marks "none" with None or its own UNSET sentinel)."""
    return default is not None and type(default).__name__ != "Sentinel"


def _choices(command: str, option: str) -> list[str]:
    return list(_options(main.commands[command])[option].type.choices)


def test_choices_are_the_registries_and_constants():
    assert _choices("export", "target") == list(TARGETS)
    assert sorted(_choices("export", "moe")) == sorted(MOE_MODES)
    assert _choices("sparsity", "mode") == list(MODES)
    assert _choices("evaluate", "rule") == sorted(ponder.list_exit_rules())
    assert sorted(_choices("convert", "style")) == sorted(STYLES)
    assert sorted(_choices("convert", "head")) == sorted(HEADS)
    assert sorted(BACKENDS) == sorted(list_backends())
    for command in ("profile", "run", "simulate"):
        assert _choices(command, "backend") == BACKENDS
