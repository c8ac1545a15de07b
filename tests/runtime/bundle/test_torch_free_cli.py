"""A device with only `pip install 'ponder[onnx]'`: `ponder verify`, `profile`, `run` and
`simulate` on an ONNX bundle, each in a subprocess where torch, executorch and matplotlib cannot
be imported (the bundle itself is exported once, with torch, in this process)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.onnx

pytest.importorskip("onnxruntime", reason="needs the onnx extra: pip install 'ponder[onnx]'")
pytest.importorskip("onnxscript", reason="needs the onnx extra: pip install 'ponder[onnx]'")

BLOCKED = ("torch", "executorch", "matplotlib")
# `ponder` as the console script calls it, after making the blocked packages unimportable (an
# entry of None in sys.modules makes `import torch` raise ImportError, as on a device without it)
LAUNCH = (
    "import sys\n"
    f"for name in {BLOCKED!r}:\n"
    "    sys.modules[name] = None\n"
    "from ponder._cli import main\n"
    "sys.exit(main())\n"
)
POINTS = [
    {
        "name": "early",
        "thresholds": [0.0],
        "max_stage": 0,
        "moe_tau": None,
        "accuracy": 0.80,
        "accuracy_drop": 0.18,
        "flops_fraction": 0.5,
        "exit_fractions": [1.0, 0.0],
    },
    {
        "name": "full",
        "thresholds": [1.1],
        "max_stage": None,
        "moe_tau": None,
        "accuracy": 0.98,
        "accuracy_drop": 0.0,
        "flops_fraction": 1.0,
        "exit_fractions": [0.0, 1.0],
    },
]


def ponder_cli(*args: object, cwd: Path) -> subprocess.CompletedProcess:
    """Run `ponder ARGS` torch-free; the output must hold no traceback, whatever the exit code."""
    done = subprocess.run(
        [sys.executable, "-c", LAUNCH, *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Traceback" not in done.stdout + done.stderr, done.stdout + done.stderr
    return done


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """An MLP with one early exit (two stages; the smallest bundle with an exit, since every
    stage costs a second or more of ONNX export) as ONNX stage files only, with two operating
    points for the policy."""
    import torch

    import ponder
    from ponder.export import export_bundle

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Sequential(torch.nn.Linear(12, 32), torch.nn.ReLU(), torch.nn.Linear(32, 12)),
        torch.nn.Sequential(torch.nn.Linear(12, 32), torch.nn.ReLU(), torch.nn.Linear(32, 12)),
        torch.nn.Linear(12, 5),
    )
    ponder.convert_(model, ponder.EarlyExitConfig(num_exits=1))
    out = tmp_path_factory.mktemp("torch_free") / "bundle"
    rule = {"name": "max_prob", "ensembled": False, "thresholds": [0.5]}
    export_bundle(
        model.eval(),
        torch.randn(6, 12),
        out,
        target="onnx",
        model_id="mlp",
        exit_rule=rule,
        operating_points=POINTS,
        echo=lambda line: None,
    )
    return out


@pytest.fixture(scope="module")
def profiled(bundle) -> subprocess.CompletedProcess:
    """`ponder profile` once: it stores the cost table that `run` and `simulate` read."""
    return ponder_cli(
        "profile", bundle, "--warmup", 1, "--repeats", 3, "--no-energy", cwd=bundle.parent
    )


@pytest.fixture
def copy(bundle, tmp_path) -> Path:
    """A private copy of the bundle that a test may damage."""
    return Path(shutil.copytree(bundle, tmp_path / "bundle"))


def test_verify_runs_the_onnx_stages_without_torch(bundle):
    done = ponder_cli("verify", bundle, cwd=bundle.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "files match their sha256" in done.stdout
    assert "onnx/: 2 stages run (onnxruntime, CPU provider)" in done.stdout
    assert "ran 2 stages of onnx at batch 6 and 1: all outputs within tolerance" in done.stdout
    assert done.stdout.rstrip().endswith("bundle OK")


def _add_pte(root: Path) -> None:
    """List a model.pte in the manifest, sealed, as an export with --target all does. Without
    torch it is never opened, so its bytes do not matter here."""
    from ponder.runtime import write_manifest

    (root / "model.pte").write_bytes(b"PTE0" * 64)
    manifest = json.loads((root / "manifest.json").read_text())
    write_manifest(root, manifest, [*manifest["files"], "model.pte"])


def test_verify_says_the_pte_was_not_executed_and_what_to_install(copy):
    _add_pte(copy)
    done = ponder_cli("verify", copy, cwd=copy.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "model.pte: NOT executed here, only its sha256 was checked" in done.stdout
    assert "'torch'" in done.stdout and "pip install 'ponder[export]'" in done.stdout
    assert "ran 2 stages of onnx at batch 6 and 1" in done.stdout
    assert "bundle OK for what ran here; not executed: model.pte" in done.stdout

    strict = ponder_cli("verify", copy, "--require-all", cwd=copy.parent)
    assert strict.returncode == 1
    assert "Error:" in strict.stderr and "pip install 'ponder[export]'" in strict.stderr


def test_verify_fails_on_a_corrupt_onnx_file(copy):
    path = copy / "onnx" / "stage_1.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    done = ponder_cli("verify", copy, cwd=copy.parent)
    assert done.returncode == 1
    assert "onnx/stage_1.onnx" in done.stderr and "corrupt or truncated" in done.stderr


def test_verify_fails_when_onnx_runtime_disagrees_with_the_stored_outputs(copy):
    from ponder.runtime import write_manifest

    with np.load(copy / "samples.npz") as data:
        arrays = {k: data[k] for k in data.files}
    arrays["exit_logp_0"] = arrays["exit_logp_0"] + 0.5
    with (copy / "samples.npz").open("wb") as f:
        np.savez(f, **arrays)
    manifest = json.loads((copy / "manifest.json").read_text())
    write_manifest(copy, manifest, list(manifest["files"]))  # sealed again: only results differ
    done = ponder_cli("verify", copy, cwd=copy.parent)
    assert done.returncode == 1
    assert "onnx stage 0 output 'exit_logp_0'" in done.stderr


def test_profile_writes_the_cost_table_without_torch(bundle, profiled):
    assert profiled.returncode == 0, profiled.stdout + profiled.stderr
    assert "onnxruntime" in profiled.stdout and "cumulative ms" in profiled.stdout
    table = json.loads((bundle / "costs.onnxruntime.json").read_text())
    assert table["backend"] == "onnxruntime" and len(table["stages"]) == 2


def test_run_serves_requests_under_a_policy_without_torch(bundle, profiled, tmp_path):
    x = np.load(bundle / "samples.npz")["x"]
    np.savez(tmp_path / "inputs.npz", x=x, y=np.zeros(len(x), dtype=np.int64))
    out = tmp_path / "run.json"
    done = ponder_cli(
        "run",
        bundle,
        "--input",
        tmp_path / "inputs.npz",
        "--latency-ms",
        1000,
        "--out",
        out,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "costs: " in done.stdout and "(ponder profile)" in done.stdout
    assert f"{len(x)} requests, {len(x)} samples" in done.stdout
    assert "latency per request" in done.stdout and "accuracy:" in done.stdout
    summary = json.loads(out.read_text())["summary"]
    assert sum(summary["exits_per_stage"]) == len(x)


def test_simulate_writes_json_and_skips_the_plot_without_matplotlib(bundle, profiled, tmp_path):
    out = tmp_path / "sim"
    out.mkdir()
    (out / "simulate.png").write_bytes(b"an older run's plot")
    done = ponder_cli("simulate", bundle, "--step-s", 600, "--out", out, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "simulate.png not drawn: matplotlib is not installed (pip install matplotlib)" in (
        done.stdout
    )
    assert "SIMULATED replay" in done.stdout and "strategy (simulated)" in done.stdout
    assert f"wrote {out / 'simulate.json'}\n" in done.stdout
    data = json.loads((out / "simulate.json").read_text())
    assert data["simulated"] is True and len(data["strategies"]) == 3
    assert not (out / "simulate.png").exists()  # no stale plot passes for this run's
