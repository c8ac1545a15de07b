"""The Java core of android_demo (android_demo/core) as the Python tests drive it: the build, and
a JUnit run whose counts must all be successful (a skipped Java test fails the Python test)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[1] / "android_demo" / "core"
JUNIT = Path("/usr/share/java/junit-platform-console-standalone.jar")


def need_java() -> None:
    if shutil.which("javac") is None or not JUNIT.is_file():
        pytest.fail(
            "Java 17 and JUnit 5 are missing: run android_demo/core/deps.sh (make test does)"
        )


def run_java_tests(selectors: list[str], env: dict[str, str], expected: int) -> str:
    """Build the core and run the JUnit tests `selectors` pick (console launcher options such as
    ["--select-package", "dev.ponder.core.policy"]) with `env` added; every one of `expected`
    tests must pass, none skipped. Returns the launcher's output."""
    need_java()
    done = subprocess.run(
        [str(CORE / "build.sh"), "test", *selectors],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    counts = {k: int(n) for n, k in re.findall(r"\[\s*(\d+) tests (\w+)\s*\]", output)}
    assert counts["failed"] == 0 and counts["skipped"] == 0 and counts["aborted"] == 0, output
    assert counts["successful"] == expected, output
    return output
