"""The Android demo's plain-JVM core (android_demo/core), built and tested with Debian's JDK and
JUnit 5 (`make test` installs them through android_demo/core/deps.sh) on bundles `ponder export`
wrote in this run: the Java tests must all run (none skipped), and what the core reads from each
bundle must be what ponder.runtime reads."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from java_core import CORE, need_java, run_java_tests

from ponder import OperatingPoint
from ponder.runtime import Bundle, manifest_digest, operating_points


@pytest.fixture(scope="module")
def built():
    need_java()
    return CORE / "build" / "main"


@pytest.fixture(scope="module")
def pointed_bundle(ztw_bundle, tmp_path_factory) -> Path:
    """The ZTW bundle with operating points (a tiny threshold, an MoE tau),
    resealed as export seals a manifest."""
    root = tmp_path_factory.mktemp("java") / "pointed"
    shutil.copytree(ztw_bundle, root)
    d = json.loads((root / "manifest.json").read_text())
    d["operating_points"] = [
        OperatingPoint("fast", (0.5, 1e-05), accuracy=0.9, flops_fraction=0.4).to_dict(),
        OperatingPoint(
            "late", (0.875, 0.99), accuracy=0.97, flops_fraction=0.8, moe_tau=0.3
        ).to_dict(),
    ]
    d["manifest_sha256"] = manifest_digest(d)
    (root / "manifest.json").write_text(json.dumps(d, indent=2, ensure_ascii=False))
    assert len(operating_points(Bundle.open(root).manifest)) == 2  # Python reads it back
    return root


@pytest.fixture(scope="module")
def bundles(ztw_bundle, moe_bundle, pointed_bundle) -> list[Path]:
    return [ztw_bundle, moe_bundle, pointed_bundle]


def _counts(output: str) -> dict[str, int]:
    return {k: int(n) for n, k in re.findall(r"\[\s*(\d+) tests (\w+)\s*\]", output)}


@pytest.mark.slow
def test_java_tests_pass_on_bundles_python_wrote(built, bundles):
    env = {"PONDER_TEST_BUNDLES": os.pathsep.join(map(str, bundles))}
    selectors = ["--select-class", "dev.ponder.core.JsonTest", "--select-class",
                 "dev.ponder.core.ManifestTest"]  # fmt: skip
    run_java_tests(selectors, env, expected=3 + 5 * len(bundles))  # Json + 5 per bundle


@pytest.mark.slow
def test_the_core_reads_what_the_python_runtime_reads(built, bundles):
    subprocess.run([str(CORE / "build.sh")], check=True, capture_output=True, timeout=300)
    for path in bundles:
        done = subprocess.run(
            ["java", "-cp", str(built), "dev.ponder.core.Inspect", str(path)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        java = json.loads(done.stdout)
        m = Bundle.open(path).manifest
        assert java["model_id"] == m.model_id
        assert (
            java["manifest_sha256"]
            == json.loads((path / "manifest.json").read_text())["manifest_sha256"]
        )
        assert java["exit_rule"] == m.exit_rule.name
        assert [(s["method"], s["exit"], s["flops"]) for s in java["stages"]] == [
            (s.method, s.exit, s.flops) for s in m.stages
        ]
        points = operating_points(m)
        assert len(points) == (2 if path.name == "pointed" else 0)
        assert [p["name"] for p in java["operating_points"]] == [p.name for p in points]
        for got, want in zip(java["operating_points"], points, strict=True):
            expected = [None if t == float("inf") else t for t in want.thresholds]
            assert got["thresholds"] == pytest.approx(expected)
            assert got["moe_tau"] == want.moe_tau


def test_a_damaged_bundle_is_refused_by_the_java_inspector(built, ztw_bundle, tmp_path):
    subprocess.run([str(CORE / "build.sh")], check=True, capture_output=True, timeout=300)
    copy = tmp_path / "bundle"
    shutil.copytree(ztw_bundle, copy)
    (copy / "onnx" / "stage_1.onnx").write_bytes(b"not onnx")
    done = subprocess.run(
        ["java", "-cp", str(built), "dev.ponder.core.Inspect", str(copy)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    assert "stage_1.onnx has 8 bytes, the manifest says" in done.stderr
