"""Checks a manifest dict: format and version, the JSON Schema, then the rules between fields."""

from __future__ import annotations

import copy
import functools
import json
import re
from importlib import resources
from typing import Any

from ponder._core.errors import BundleError
from ponder.runtime._bundle.digest import check_relative
from ponder.runtime._bundle.layout import MANIFEST, int8_onnx

FORMAT = "ponder-bundle"
SCHEMA_VERSION = "1.0"
SCHEMA_FILE = "manifest.schema.json"
_REEXPORT = "Re-export the bundle with this version of ponder."
_SHOWN = 8  # schema errors listed in one message; the rest are counted


def parse_version(version: object) -> tuple[int, int]:
    """'MAJOR.MINOR' -> (major, minor), or BundleError."""
    m = re.fullmatch(r"(\d+)\.(\d+)", version) if isinstance(version, str) else None
    if m is None:
        raise BundleError(
            f"{MANIFEST} has schema_version {version!r}, expected a string 'MAJOR.MINOR' "
            f"such as {SCHEMA_VERSION!r}. {_REEXPORT}"
        )
    return int(m[1]), int(m[2])


@functools.cache
def load_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of manifest format version 1.x, as shipped."""
    text = resources.files("ponder.runtime").joinpath(SCHEMA_FILE).read_text(encoding="utf-8")
    return json.loads(text)


@functools.cache
def _validator(relaxed: bool) -> Any:
    # jsonschema is imported here, not at module level: `import ponder.runtime` stays cheap.
    from jsonschema import Draft202012Validator

    schema = load_schema()
    if relaxed:
        schema = _open_schema(copy.deepcopy(schema))
    return Draft202012Validator(schema)


def _open_schema(node: Any) -> Any:
    """Drop every `additionalProperties: false`: a newer minor version may add keys."""
    if isinstance(node, dict):
        if node.get("additionalProperties") is False:
            del node["additionalProperties"]
        for value in node.values():
            _open_schema(value)
    elif isinstance(node, list):
        for value in node:
            _open_schema(value)
    return node


def validate_manifest(d: object) -> None:
    """Raise BundleError unless `d` is a manifest this ponder can read (the digest is not checked).

    A manifest of a newer minor version (1.x, x > ours) may carry keys this reader does not know;
    they are allowed and ignored. An unknown major version is refused.
    """
    if not isinstance(d, dict):
        raise BundleError(f"{MANIFEST} holds a JSON {type(d).__name__}, not an object. {_REEXPORT}")
    if d.get("format") != FORMAT:
        raise BundleError(
            f"{MANIFEST} has format {d.get('format')!r}, not {FORMAT!r}: this is not a "
            "ponder bundle. Point ponder at the folder `ponder export` wrote."
        )
    major, minor = parse_version(d.get("schema_version"))
    ours_major, ours_minor = parse_version(SCHEMA_VERSION)
    if major != ours_major:
        raise BundleError(
            f"bundle schema {major}.x, this ponder reads {ours_major}.x: upgrade ponder "
            "(pip install -U ponder) or re-export the bundle"
            if major > ours_major
            else f"bundle schema {major}.x is older than this ponder reads ({ours_major}.x): "
            "re-export the bundle with this version of ponder"
        )
    _check_schema(d, relaxed=minor > ours_minor)
    problems = _cross_field_problems(d)
    if problems:
        listed = "\n".join(f"  - {p}" for p in problems)
        raise BundleError(f"{MANIFEST} is inconsistent:\n{listed}\n{_REEXPORT}")


def _check_schema(d: dict[str, Any], *, relaxed: bool) -> None:
    errors = sorted(_validator(relaxed).iter_errors(d), key=lambda e: list(map(str, e.path)))
    if not errors:
        return
    lines = [f"  - at {_where(e.absolute_path)}: {e.message}" for e in errors[:_SHOWN]]
    if len(errors) > _SHOWN:
        lines.append(f"  - ... and {len(errors) - _SHOWN} more")
    listed = "\n".join(lines)
    raise BundleError(
        f"{MANIFEST} does not match the bundle schema {SCHEMA_VERSION} "
        f"(ponder/runtime/{SCHEMA_FILE}):\n{listed}\n"
        "Fix these keys, or re-export the bundle; hand-edited manifests also fail the "
        "manifest_sha256 check."
    )


def _where(path: Any) -> str:
    """JSON path as `stages[1].flops`; `(top level)` for the root."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else str(part)
    return out or "(top level)"


def _cross_field_problems(d: dict[str, Any]) -> list[str]:
    """What the schema cannot say: wiring of stage inputs, counts, sums, file references."""
    stages = d["stages"]
    problems = _stage_problems(d, stages)
    exits = sum(1 for s in stages if s["exit"])
    named = [("exit_rule", d["exit_rule"])]
    named += [(f"operating_points[{i}]", p) for i, p in enumerate(d["operating_points"])]
    for where, item in named:
        if item["thresholds"] is not None and len(item["thresholds"]) != exits:
            problems.append(
                f"{where}.thresholds has {len(item['thresholds'])} values but the bundle has "
                f"{exits} early exits (one threshold per exit, or null)"
            )
    if d["task"] == "classification" and d["classes"] is None:
        problems.append("task is 'classification' but classes is null")
    return problems + _file_problems(d)


def _stage_problems(d: dict[str, Any], stages: list[dict[str, Any]]) -> list[str]:
    problems: list[str] = []
    available = {t["name"]: ("model input", t["dtype"]) for t in d["inputs"]}
    tau = (d.get("moe") or {}).get("tau_input")
    if tau:  # the dynamic_k gate's tau, set by the runtime for every MoE stage
        available[tau] = ("control input", "float32")
    methods: set[str] = set()
    total, last_block = 0, -1
    for i, s in enumerate(stages):
        where = f"stages[{i}]"
        if s["index"] != i:
            problems.append(f"{where}.index is {s['index']}, expected {i} (stages in order)")
        if s["method"] in methods:
            problems.append(f"{where}.method {s['method']!r} is used by an earlier stage")
        methods.add(s["method"])
        for t in s["inputs"]:
            source = available.get(t["name"])
            if source is None:
                known = ", ".join(sorted(available))
                problems.append(
                    f"{where} input {t['name']!r} is neither a model input nor an output of an "
                    f"earlier stage (available: {known})"
                )
            elif source[1] != t["dtype"]:
                problems.append(
                    f"{where} input {t['name']!r} is {t['dtype']} but its source "
                    f"({source[0]}) is {source[1]}"
                )
        for t in s["outputs"]:
            available[t["name"]] = (f"output of stage {i}", t["dtype"])
        total += s["flops"]
        if s["cumulative_flops"] != total:
            problems.append(
                f"{where}.cumulative_flops is {s['cumulative_flops']}, but the flops of "
                f"stages 0..{i} sum to {total}"
            )
        for b in s["blocks"]:
            if b <= last_block:
                problems.append(f"{where}.blocks: block {b} is not after block {last_block}")
            last_block = max(last_block, b)
        is_last = i == len(stages) - 1
        if s["exit"] == is_last:
            problems.append(
                f"{where}.exit is {str(s['exit']).lower()}: every stage but the last has an "
                "early exit (true); the last ends in the model's own head (false)"
            )
    return problems


def _file_problems(d: dict[str, Any]) -> list[str]:
    """Every path is a plain relative path, and every file the manifest names has a hash entry."""
    problems: list[str] = []
    files = d["files"]
    with_onnx = [(i, s) for i, s in enumerate(d["stages"]) if s["onnx"] is not None]
    referenced = [(f"stages[{i}].onnx", s["onnx"]) for i, s in with_onnx]
    quant = d["quantization"] or {}
    if "pte" in quant:
        referenced.append(("quantization.pte", quant["pte"]))
    if "onnx_dir" in quant:
        referenced += [
            (f"quantization.onnx_dir (stage {i})", int8_onnx(quant["onnx_dir"], s["onnx"]))
            for i, s in with_onnx
        ]
    for where, path in [("files", p) for p in files] + referenced:
        try:
            check_relative(path)
        except BundleError as e:
            problems.append(f"{where}: {e}")
    for where, path in referenced:
        if path not in files:
            problems.append(f"{where} names {path!r}, which has no entry in files (no hash)")
    if MANIFEST in files:
        problems.append(f"files lists {MANIFEST}, which cannot hold its own hash")
    return problems
