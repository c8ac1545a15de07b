"""The `ponder` command line: help everywhere, registries listable, clear errors."""

import pytest
from click.testing import CliRunner

import ponder
from ponder._cli import main


def _commands(group, prefix=()):
    for name, command in group.commands.items():
        yield (*prefix, name)
        if hasattr(command, "commands"):
            yield from _commands(command, (*prefix, name))


@pytest.mark.parametrize("path", [(), *_commands(main)])
def test_every_command_has_help(path):
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output and "--help" in result.output


def test_version():
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and ponder.__version__ in result.output


def test_list_rules_and_conversions():
    runner = CliRunner()
    rules = runner.invoke(main, ["list", "rules"])
    assert rules.exit_code == 0
    assert [line.split()[0] for line in rules.output.splitlines()] == sorted(
        ponder.list_exit_rules()
    )
    assert runner.invoke(main, ["list", "conversions"]).output.split() == [
        "early_exit",
        "moe",
        "split",
    ]
    assert "mnist1d" in runner.invoke(main, ["list", "datasets"]).output
    assert "digits_cnn" in runner.invoke(main, ["list", "models"]).output


def test_list_gates_backends_and_codecs_shows_each_registry_in_full():
    import ponder.kernels
    import ponder.runtime

    runner = CliRunner()
    expected = {
        "gates": ponder.list_gates(),
        "kernels": ponder.kernels.list_backends(),
        "backends": sorted(ponder.runtime.list_backends()),
        "codecs": sorted(ponder.runtime.list_codecs()),
        "selectors": ["cls", "received"],
    }
    for registry, names in expected.items():
        result = runner.invoke(main, ["list", registry])
        assert result.exit_code == 0, result.output
        assert [line.split()[0] for line in result.output.splitlines()] == list(names)


def test_unknown_registry_is_a_usage_error():
    result = CliRunner().invoke(main, ["list", "colours"])
    assert result.exit_code == 2 and "Invalid value" in result.output


def test_bad_option_value_is_a_usage_error():
    result = CliRunner().invoke(main, ["demo", "--delta", "1.5"])
    assert result.exit_code == 2 and "--delta" in result.output


def test_python_dash_m_lists_the_same_commands_as_ponder():
    import subprocess
    import sys
    from pathlib import Path

    def listed(argv: list[str]) -> list[str]:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=True).stdout
        commands = out.split("Commands:", 1)[1].splitlines()
        return [line.split()[0] for line in commands if line.strip()]

    script = Path(sys.executable).with_name("ponder")
    via_module = listed([sys.executable, "-m", "ponder._cli", "--help"])
    assert via_module == listed([str(script), "--help"])
    assert {"export", "verify", "profile", "run", "simulate", "bench"} <= set(via_module)
    assert sorted(main.commands) == via_module


def test_a_user_error_in_any_command_is_one_line_and_exit_code_1(monkeypatch):
    import ponder._bench.exits

    def broken(*args, **kwargs):
        raise ponder.ConfigError("num_exits must be >= 1; pass --exits 1 or more")

    monkeypatch.setattr(ponder._bench.exits, "run_bench_exits", broken)
    result = CliRunner().invoke(main, ["bench", "exits", "--out", "unused"])
    assert result.exit_code == 1
    assert result.output.strip() == "Error: num_exits must be >= 1; pass --exits 1 or more"
    assert isinstance(result.exception, SystemExit)  # no traceback
