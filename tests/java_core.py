"""The Java core of android_demo (android_demo/core) as the Python tests drive it: the build, and
a JUnit run whose counts must all be successful (a skipped Java test fails the Python test)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
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


def tiny_vit_split(root: Path, codecs: list[str]) -> tuple[Path, np.ndarray]:
    """The tiny ViT split after block 1 (keep 0.5, int8 by default) exported as ONNX with
    `codecs` and no local bundle, into root/"b"; returns the bundle folder and the inputs."""
    from tiny_models import inputs, make

    import ponder
    from ponder.export import export_split

    need_java()
    model, x = make("vit"), inputs("vit")
    ponder.convert_(model, ponder.SplitConfig(block=1, keep=0.5, codec="int8"))
    export_split(model, x, root / "b", target="onnx", codecs=codecs, local=False,
                 echo=lambda line: None)  # fmt: skip
    return root / "b", x.numpy()


def write_le(path: Path, array: np.ndarray, dtype: str) -> None:
    """`array` as raw little-endian `dtype` bytes, C order (what the Java tests read)."""
    path.write_bytes(np.ascontiguousarray(array, dtype=np.dtype(dtype).newbyteorder("<")).tobytes())
