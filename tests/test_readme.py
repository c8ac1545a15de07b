"""The README stays true: its Python runs, its commands exist and run."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
BIN = Path(sys.executable).parent


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def _commands() -> list[str]:
    lines = (line.split("#")[0].strip() for block in _blocks("bash") for line in block.splitlines())
    return [line for line in lines if line]


def test_the_two_setup_commands_are_documented_and_exist():
    commands = _commands()
    assert "make demo" in commands and "make test" in commands
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    # torch (the CPU build) is installed first, from bootstrap.txt, then everything else from
    # the lock, which pins the same torch
    bootstrap = (ROOT / "requirements" / "bootstrap.txt").read_text().split()
    assert "torch==2.13.0" in bootstrap
    assert "torch==2.13.0" in (ROOT / "requirements" / "lock.txt").read_text().split()
    for target in ("train", "dev"):  # both installs come after the bootstrap
        rule = rf"^\$\(VENV\)/\.installed-{target}: \$\(VENV\)/\.installed-bootstrap .*\$\(LOCK\)"
        assert re.search(rule, makefile, re.M), target
    assert "requirements/lock.txt" in (ROOT / "README.md").read_text()


def test_the_lock_check_fails_when_pyproject_asks_for_what_the_lock_does_not_pin(tmp_path):
    pyproject = (ROOT / "pyproject.toml").read_text()
    changed = tmp_path / "pyproject.toml"
    changed.write_text(pyproject.replace('"numpy>=1.24"', '"numpy>=1.24", "pyfiglet>=1.0"'))
    lock, bootstrap = ROOT / "requirements" / "lock.txt", ROOT / "requirements" / "bootstrap.txt"
    check = [sys.executable, str(ROOT / "requirements" / "check_lock.py")]
    same = subprocess.run(
        [*check, str(ROOT / "pyproject.toml"), str(lock), str(bootstrap)],
        capture_output=True,
        text=True,
    )
    assert same.returncode == 0, same.stderr
    out = subprocess.run(
        [*check, str(changed), str(lock), str(bootstrap)], capture_output=True, text=True
    )
    assert out.returncode == 1 and "pyfiglet" in out.stderr and "make lock" in out.stderr


@pytest.mark.slow
def test_python_blocks_run(tmp_path):
    for block in _blocks("python"):
        subprocess.run([sys.executable, "-c", block], check=True, cwd=tmp_path, timeout=600)


@pytest.mark.parametrize(
    "command",
    [c for c in _commands() if c.startswith("ponder") and c.split()[1] in ("--help", "list")],
)
def test_quick_ponder_commands_run(command):
    args = shlex.split(command)
    out = subprocess.run(
        [str(BIN / args[0]), *args[1:]], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr


def test_every_ponder_command_in_the_readme_parses():
    """The long ones (demo, bench) run in their own tests; here their options must parse."""
    for command in (c for c in _commands() if c.startswith("ponder")):
        args = shlex.split(command)[1:]
        out = subprocess.run(
            [str(BIN / "ponder"), *args, "--help"], capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0, (command, out.stderr)


def test_policy_file_example_parses(tmp_path):
    from ponder.runtime import load_policy

    blocks = _blocks("toml")
    assert blocks, "the README shows a policy file"
    for i, block in enumerate(blocks):
        (tmp_path / f"policy{i}.toml").write_text(block)
        spec = load_policy(tmp_path / f"policy{i}.toml")
        assert spec.rules, block
