"""Hashes of bundle files and of the manifest itself, and the rule for paths inside a bundle."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path, PurePosixPath
from typing import Any

from ponder._core.errors import BundleError

_CHUNK = 1 << 20  # 1 MiB reads: a .pte can be hundreds of MB and must not be read whole


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def canonical_json(d: dict[str, Any]) -> bytes:
    """The bytes the manifest digest is taken over: sorted keys, no spaces, UTF-8."""
    return json.dumps(d, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def manifest_digest(d: dict[str, Any]) -> str:
    """Hex sha256 of the canonical JSON of manifest `d` without its `manifest_sha256` key."""
    return hashlib.sha256(
        canonical_json({k: v for k, v in d.items() if k != "manifest_sha256"})
    ).hexdigest()


def check_relative(relative: str) -> PurePosixPath:
    """`relative` as a path that stays inside the bundle, or BundleError."""
    p = PurePosixPath(relative)
    if not relative or "\\" in relative or p.is_absolute() or ".." in p.parts:
        raise BundleError(
            f"bundle path {relative!r} is not a plain relative path inside the bundle; "
            "use forward slashes and no '..' or leading '/' (e.g. 'onnx/stage_0.onnx')"
        )
    return p
