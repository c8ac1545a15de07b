"""Bundles on disk: write_manifest seals one, Bundle.open reads it and refuses damaged ones."""

import hashlib
import json

import pytest

from ponder import BundleError, ConfigError
from ponder.runtime import Bundle, write_manifest


def test_valid_bundle_round_trip(make_bundle):
    root = make_bundle()
    written = json.loads((root / "manifest.json").read_text())
    bundle = Bundle.open(root)
    assert bundle.root == root
    assert bundle.raw == written
    assert bundle.manifest.to_dict() == written
    assert bundle.manifest.model_id == "digits_cnn"
    assert [s.method for s in bundle.manifest.stages] == ["stage_0", "stage_1", "stage_2"]
    assert bundle.pte_path == root / "model.pte"
    assert bundle.int8_pte_path == root / "model_int8.pte"
    assert bundle.onnx_path(1) == root / "onnx/stage_1.onnx"
    assert bundle.onnx_path(2, int8=True) == root / "onnx_int8/stage_2.onnx"
    assert bundle.path("validation.json").read_bytes().startswith(b"{")
    checks = bundle.check_files()
    assert len(checks) == 9 and all(c.ok and c.problem == "" for c in checks)
    assert all(c.actual_sha256 == c.expected.sha256 for c in checks)


def test_write_manifest_fills_hashes_and_writes_pretty_json(make_bundle, base_manifest):
    for key in ("format", "schema_version", "ponder_version", "created_utc"):
        del base_manifest[key]
    root = make_bundle(base_manifest)
    text = (root / "manifest.json").read_text()
    assert text.startswith('{\n  "') and text.endswith("}\n")
    d = json.loads(text)
    assert d["files"]["model.pte"] == {
        "sha256": hashlib.sha256(b"PTE0" * 64).hexdigest(),
        "bytes": 256,
    }
    assert list(d["files"]) == sorted(d["files"])
    assert d["format"] == "ponder-bundle" and d["schema_version"] == "1.0"
    assert d["created_utc"].endswith("Z")
    assert not list(root.glob(".*.tmp"))


def test_write_manifest_refuses_invalid_input_and_writes_nothing(make_bundle, base_manifest):
    root = make_bundle()
    files = list(json.loads((root / "manifest.json").read_text())["files"])
    (root / "manifest.json").unlink()
    with pytest.raises(BundleError, match=r"cannot hash onnx/stage_9\.onnx: no such file"):
        write_manifest(root, base_manifest, ["onnx/stage_9.onnx"])
    with pytest.raises(BundleError, match="cannot be listed in its own files table"):
        write_manifest(root, base_manifest, ["manifest.json"])
    with pytest.raises(BundleError, match="not a plain relative path"):
        write_manifest(root, base_manifest, ["../outside"])
    with pytest.raises(BundleError, match="a value JSON cannot store"):
        write_manifest(root, {**base_manifest, "config": {"dtype": object()}}, ["model.pte"])
    base_manifest["stages"][1]["inputs"][0]["name"] = "hiddn"
    with pytest.raises(BundleError, match="'hiddn' is neither a model input"):
        write_manifest(root, base_manifest, files)
    assert not (root / "manifest.json").exists()


def test_missing_folder_file_instead_of_folder_and_missing_manifest(tmp_path):
    with pytest.raises(BundleError, match="does not exist; pass the folder that `ponder export`"):
        Bundle.open(tmp_path / "nowhere")
    (tmp_path / "model.pte").write_bytes(b"x")
    with pytest.raises(BundleError, match="is a file, not a folder"):
        Bundle.open(tmp_path / "model.pte")
    with pytest.raises(BundleError, match=r"has no manifest\.json: it is not a ponder bundle"):
        Bundle.open(tmp_path)


def test_invalid_json_says_where(make_bundle):
    root = make_bundle()
    path = root / "manifest.json"
    path.write_text(path.read_text()[:-3])
    with pytest.raises(BundleError, match=r"manifest.json is not valid JSON \(line \d+, column"):
        Bundle.open(root)
    path.write_bytes(b"\xff\xfe{}")
    with pytest.raises(BundleError, match="is not UTF-8 text"):
        Bundle.open(root)


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (lambda d: d.update(format="other"), "format 'other', not 'ponder-bundle'"),
        (lambda d: d.update(schema_version="2.0"), "bundle schema 2.x, this ponder reads 1.x"),
        (lambda d: d["stages"][0].update(flops=None), "at stages[0].flops: None is not of type"),
        (lambda d: d["stages"][1]["inputs"][0].update(name="h"), "'h' is neither a model input"),
    ],
    ids=["format", "major version", "schema", "wiring"],
)
def test_bad_manifests_on_disk_are_refused(make_bundle, edit_manifest, edit, fragment):
    root = make_bundle()
    edit_manifest(root, edit)
    with pytest.raises(BundleError) as info:
        Bundle.open(root)
    assert fragment in str(info.value)


def test_minor_version_bump_is_accepted_on_disk(make_bundle, base_manifest):
    base_manifest.update(schema_version="1.7", offload={"split_block": 2, "codec": "int8+zstd"})
    bundle = Bundle.open(make_bundle(base_manifest))
    assert bundle.manifest.schema_version == "1.7"
    assert bundle.raw["offload"]["codec"] == "int8+zstd"


def test_hand_edited_manifest_fails_the_digest(make_bundle, edit_manifest):
    root = make_bundle()
    edit_manifest(root, lambda d: d["exit_rule"].update(thresholds=[0.5, 0.5]), reseal=False)
    with pytest.raises(BundleError, match=r"manifest\.json was edited after export"):
        Bundle.open(root)


def test_missing_listed_file(make_bundle):
    root = make_bundle()
    (root / "onnx/stage_1.onnx").unlink()
    with pytest.raises(
        BundleError, match=r"onnx/stage_1\.onnx: listed in manifest\.json but missing"
    ):
        Bundle.open(root, verify_hashes=False)


def test_truncated_file_is_caught_by_size_even_without_hashes(make_bundle):
    root = make_bundle()
    pte = root / "model.pte"
    pte.write_bytes(pte.read_bytes()[:100])
    with pytest.raises(BundleError, match=r"model.pte: 100 bytes, manifest says 256 \(corrupt or"):
        Bundle.open(root, verify_hashes=False)


def test_same_size_corruption_is_caught_by_the_hash(make_bundle):
    root = make_bundle()
    onnx = root / "onnx_int8/stage_0.onnx"
    onnx.write_bytes(b"\x00" + onnx.read_bytes()[1:])
    with pytest.raises(BundleError, match=r"1 bad file\(s\):\n  - onnx_int8/stage_0.onnx: sha256"):
        Bundle.open(root)
    bundle = Bundle.open(root, verify_hashes=False)  # sizes only: opens, and the check still tells
    [bad] = [c for c in bundle.check_files() if not c.ok]
    assert bad.status == "sha256" and "corrupt or truncated" in bad.problem


def test_accessors_refuse_what_the_bundle_lacks(make_bundle, base_manifest):
    base_manifest["quantization"] = None
    root = make_bundle(base_manifest)
    files = json.loads((root / "manifest.json").read_text())["files"]
    write_manifest(root, base_manifest, [f for f in files if f != "model.pte"])
    bundle = Bundle.open(root)
    with pytest.raises(
        BundleError, match=r"no ExecuTorch program .*pip install 'ponder\[export\]'"
    ):
        bundle.pte_path  # noqa: B018
    with pytest.raises(BundleError, match="has no int8 program"):
        bundle.int8_pte_path  # noqa: B018
    with pytest.raises(BundleError, match="has no int8 ONNX files"):
        bundle.onnx_path(0, int8=True)
    with pytest.raises(ConfigError, match=r"stage 3 does not exist; this bundle has stages 0\.\.2"):
        bundle.onnx_path(3)
    with pytest.raises(BundleError, match="not a plain relative path"):
        bundle.path("../etc/passwd")


def test_a_bundle_without_onnx_opens_and_says_so(tmp_path, base_manifest):
    for stage in base_manifest["stages"]:
        stage["onnx"] = None
    base_manifest["quantization"] = None
    root = tmp_path / "pte-only"
    root.mkdir()
    (root / "model.pte").write_bytes(b"PTE0" * 64)
    write_manifest(root, base_manifest, ["model.pte"])
    bundle = Bundle.open(root)
    assert bundle.pte_path == root / "model.pte"
    with pytest.raises(BundleError, match="no ONNX files"):
        bundle.onnx_path(0)
