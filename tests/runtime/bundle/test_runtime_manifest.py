"""Manifest validation on dicts: schema, versions, cross-field rules, digest, dataclass round trip."""

import copy
import hashlib
import json

import pytest
from jsonschema import Draft202012Validator

from ponder import BundleError
from ponder.runtime import (
    SCHEMA_VERSION,
    Manifest,
    TensorSpec,
    load_schema,
    manifest_digest,
    sha256_file,
    validate_manifest,
)


@pytest.fixture
def sealed(base_manifest):
    """A complete manifest dict (files table and digest filled, files not on disk)."""
    d = copy.deepcopy(base_manifest)
    entry = {"sha256": "0" * 64, "bytes": 1}
    names = ["model.pte", "model_int8.pte", "validation.json"]
    names += [f"{folder}/stage_{i}.onnx" for folder in ("onnx", "onnx_int8") for i in range(3)]
    d["files"] = {name: dict(entry) for name in names}
    d["manifest_sha256"] = manifest_digest(d)
    return d


@pytest.fixture
def edited(sealed):
    """edited(edit) -> the sealed manifest after `edit(d)`."""

    def apply(edit):
        edit(sealed)
        return sealed

    return apply


def test_schema_file_is_a_valid_draft_2020_12_schema():
    Draft202012Validator.check_schema(load_schema())
    assert SCHEMA_VERSION == "1.0"


def test_manifest_round_trips_through_the_dataclasses(sealed):
    d = sealed
    m = Manifest.from_dict(d)
    assert m.to_dict() == d
    assert json.dumps(m.to_dict()) == json.dumps(d)  # same key order as documented
    assert m.num_exits == 2
    assert m.stages[1].inputs == (TensorSpec("hidden", "float32", ("batch", 32, 8, 8)),)
    assert m.exit_rule.thresholds == (0.9, 0.8)
    assert m.files["model.pte"].bytes == 1


def test_manifest_digest_is_sha256_of_canonical_json_without_its_own_key(sealed):
    d = sealed
    body = {k: v for k, v in d.items() if k != "manifest_sha256"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert manifest_digest(d) == hashlib.sha256(canonical.encode()).hexdigest()
    assert manifest_digest(dict(reversed(list(body.items())))) == manifest_digest(d)
    d["model_id"] = "digits_cnn_v2"
    assert manifest_digest(d) != d["manifest_sha256"]


def test_sha256_file_streams_files_larger_than_one_chunk(tmp_path):
    data = bytes(range(256)) * (5 * 4096 + 1)  # 5 MiB + 256 bytes: several 1 MiB chunks
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


SCHEMA_CASES = {
    "wrong type": (
        lambda d: d["stages"][1].update(flops="500"),
        "at stages[1].flops: '500' is not of type 'integer'",
    ),
    "missing stage key": (
        lambda d: d["stages"][0].pop("params"),
        "at stages[0]: 'params' is a required property",
    ),
    "missing top-level key": (lambda d: d.pop("moe"), "'moe' is a required property"),
    "unknown dtype": (lambda d: d["inputs"][0].update(dtype="float"), "at inputs[0].dtype"),
    "bad dim": (lambda d: d["inputs"][0]["shape"].append(0.5), "at inputs[0].shape[4]"),
    "bad hash": (lambda d: d["files"]["model.pte"].update(sha256="abc"), "files.model.pte.sha256"),
    "bad time": (lambda d: d.update(created_utc="yesterday"), "at created_utc"),
    "unknown key in 1.0": (
        lambda d: d.update(offload={}),
        "Additional properties are not allowed ('offload' was unexpected)",
    ),
    "unknown stage key in 1.0": (lambda d: d["stages"][0].update(tail=True), "at stages[0]"),
}


@pytest.mark.parametrize("case", SCHEMA_CASES)
def test_schema_violations_name_the_key(case, edited):
    edit, fragment = SCHEMA_CASES[case]
    with pytest.raises(BundleError, match="does not match the bundle schema") as info:
        validate_manifest(edited(edit))
    assert fragment in str(info.value)


def _rename_input(d):
    d["stages"][1]["inputs"][0]["name"] = "hiddn"


def _wire_to_later_output(d):
    d["stages"][0]["inputs"] = [dict(d["stages"][1]["outputs"][0])]


CROSS_FIELD_CASES = {
    "unknown input": (
        _rename_input,
        "stages[1] input 'hiddn' is neither a model input nor an output of an earlier stage",
    ),
    "input from a later stage": (_wire_to_later_output, "stages[0] input 'hidden' is neither"),
    "dtype mismatch": (
        lambda d: d["stages"][2]["inputs"][0].update(dtype="float16"),
        "is float16 but its source (output of stage 1) is float32",
    ),
    "threshold count": (
        lambda d: d["exit_rule"]["thresholds"].append(0.7),
        "exit_rule.thresholds has 3 values but the bundle has 2 early exits",
    ),
    "operating point thresholds": (
        lambda d: d["operating_points"][0].update(thresholds=[0.9]),
        "operating_points[0].thresholds has 1 values",
    ),
    "cumulative flops": (
        lambda d: d["stages"][1].update(cumulative_flops=500),
        "stages[1].cumulative_flops is 500, but the flops of stages 0..1 sum to 1500",
    ),
    "last stage exits": (lambda d: d["stages"][2].update(exit=True), "stages[2].exit is true"),
    "stage order": (lambda d: d["stages"][1].update(index=5), "stages[1].index is 5"),
    "duplicate method": (lambda d: d["stages"][1].update(method="stage_0"), "used by an earlier"),
    "blocks out of order": (lambda d: d["stages"][1].update(blocks=[1]), "block 1 is not after"),
    "escaping path": (
        lambda d: d["stages"][0].update(onnx="../stage_0.onnx"),
        "not a plain relative path",
    ),
    "unlisted file": (
        lambda d: d["files"].pop("onnx/stage_2.onnx"),
        "stages[2].onnx names 'onnx/stage_2.onnx', which has no entry in files",
    ),
    "unlisted int8 file": (
        lambda d: d["files"].pop("onnx_int8/stage_1.onnx"),
        "quantization.onnx_dir (stage 1) names 'onnx_int8/stage_1.onnx'",
    ),
    "classes missing": (lambda d: d.update(classes=None), "classes is null"),
}


@pytest.mark.parametrize("case", CROSS_FIELD_CASES)
def test_cross_field_errors_say_what_is_inconsistent(case, edited):
    edit, fragment = CROSS_FIELD_CASES[case]
    with pytest.raises(BundleError, match=r"manifest\.json is inconsistent") as info:
        validate_manifest(edited(edit))
    assert fragment in str(info.value)


def test_text_model_inputs_can_feed_later_stages(edited):
    def edit(d):
        mask = {"name": "attention_mask", "dtype": "int64", "shape": ["batch", "tokens"]}
        d["inputs"].append(mask)
        d["stages"][2]["inputs"].append(dict(mask))

    validate_manifest(edited(edit))


def test_newer_minor_version_is_read_and_its_new_keys_ignored(edited):
    def edit(d):
        d["schema_version"] = "1.7"
        d["offload"] = {"split_block": 2}
        d["stages"][0]["latency_ms"] = 1.5

    d = edited(edit)
    validate_manifest(d)
    m = Manifest.from_dict(d)
    assert m.schema_version == "1.7"
    assert "offload" not in m.to_dict()


def test_newer_minor_version_still_checks_types(edited):
    def edit(d):
        d["schema_version"] = "1.7"
        d["stages"][1]["flops"] = -1

    with pytest.raises(BundleError, match=r"at stages\[1\]\.flops: -1 is less than the minimum"):
        validate_manifest(edited(edit))


@pytest.mark.parametrize(
    ("version", "fragment"),
    [
        (
            "2.0",
            "bundle schema 2.x, this ponder reads 1.x: upgrade ponder (pip install -U ponder) "
            "or re-export the bundle",
        ),
        ("0.9", "bundle schema 0.x is older than this ponder reads (1.x)"),
        ("1", "expected a string 'MAJOR.MINOR'"),
        (1.0, "expected a string 'MAJOR.MINOR'"),
    ],
)
def test_unknown_major_versions_and_malformed_versions_are_refused(version, fragment, edited):
    with pytest.raises(BundleError) as info:
        validate_manifest(edited(lambda d: d.update(schema_version=version)))
    assert fragment in str(info.value)


def test_wrong_format_and_non_objects_are_refused(edited):
    with pytest.raises(BundleError, match="not a ponder bundle"):
        validate_manifest(edited(lambda d: d.update(format="onnx-bundle")))
    with pytest.raises(BundleError, match="holds a JSON list, not an object"):
        validate_manifest([])
