"""`ponder verify` and `verify_bundle`: a good bundle passes, every kind of damage fails cleanly."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

import ponder
from ponder._cli import main
from ponder.export import verify_bundle
from ponder.runtime import write_manifest


def _quiet(msg: str) -> None:
    pass


def test_good_bundles_verify(ztw_bundle, moe_bundle):
    for bundle in (ztw_bundle, moe_bundle):
        rows = verify_bundle(bundle, echo=_quiet)
        assert {r.format for r in rows} == {"pte", "onnx"} and all(r.ok for r in rows)


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flip_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _edit_manifest(root, edit):
    manifest = json.loads((root / "manifest.json").read_text())
    edit(manifest)
    (root / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda r: _truncate(r / "model.pte"), "corrupt or truncated"),
        (lambda r: _flip_byte(r / "onnx" / "stage_1.onnx"), "corrupt or truncated"),
        (lambda r: (r / "onnx" / "stage_0.onnx").unlink(), "missing"),
        (lambda r: (r / "manifest.json").unlink(), "manifest"),
        (lambda r: (r / "manifest.json").write_text("{not json"), "JSON"),
        (lambda r: _edit_manifest(r, lambda m: m.update(schema_version="2.0")), "upgrade ponder"),
        (lambda r: _edit_manifest(r, lambda m: m.update(model_id="other")), "edited"),
        (lambda r: _edit_manifest(r, lambda m: m.pop("stages")), "stages"),
    ],
    ids=[
        "truncated-pte",
        "flipped-onnx",
        "missing-onnx",
        "no-manifest",
        "bad-json",
        "major-version",
        "edited-manifest",
        "schema",
    ],
)
def test_damaged_bundles_fail_with_a_clear_error(ztw_copy, damage, message):
    damage(ztw_copy)
    with pytest.raises(ponder.BundleError, match=message):
        verify_bundle(ztw_copy, echo=_quiet)
    result = CliRunner().invoke(main, ["verify", str(ztw_copy)])
    assert result.exit_code != 0 and message.lower() in result.output.lower()


def _rewrite(root) -> None:
    """Recompute the manifest's hashes, as someone assembling a bundle by hand would."""
    manifest = json.loads((root / "manifest.json").read_text())
    write_manifest(root, manifest, list(manifest["files"]))


def test_a_program_from_another_export_is_refused(ztw_copy, moe_bundle):
    shutil.copy(moe_bundle / "model.pte", ztw_copy / "model.pte")
    _rewrite(ztw_copy)
    with pytest.raises(ponder.BundleError, match="different exports"):
        verify_bundle(ztw_copy, echo=_quiet)


def test_wrong_results_fail_naming_stage_and_output(ztw_copy):
    with np.load(ztw_copy / "samples.npz") as data:
        arrays = {k: data[k] for k in data.files}
    arrays["exit_logp_1"] = arrays["exit_logp_1"] + 0.5
    with (ztw_copy / "samples.npz").open("wb") as f:
        np.savez(f, **arrays)
    _rewrite(ztw_copy)
    with pytest.raises(ponder.ExportMismatchError, match=r"stage 1 output 'exit_logp_1'"):
        verify_bundle(ztw_copy, echo=_quiet)
