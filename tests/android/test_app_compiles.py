"""The Android demo app (android_demo/app) compiles: check.sh runs javac on its sources against
the core's sources and signature-only stand-ins of the Android and ExecuTorch classes it uses.
No Android SDK is needed, and nothing is packaged or run on a device."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

CHECK = Path(__file__).resolve().parents[2] / "android_demo" / "app" / "check.sh"


@pytest.mark.slow
def test_the_android_app_compiles_against_the_core_and_the_stand_ins():
    if shutil.which("javac") is None:
        pytest.fail("javac is missing: run android_demo/core/deps.sh (make test does)")
    done = subprocess.run([str(CHECK)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "app sources compile" in done.stdout
