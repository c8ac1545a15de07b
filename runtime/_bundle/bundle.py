"""A bundle on disk: `Bundle.open` reads and verifies one; `write_manifest` seals one."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ponder import __version__
from ponder._core.errors import BundleError, ConfigError
from ponder.runtime._bundle.digest import check_relative, manifest_digest, sha256_file
from ponder.runtime._bundle.files import FileCheck, check_files
from ponder.runtime._bundle.layout import MANIFEST, PTE, SAMPLES, int8_onnx
from ponder.runtime._bundle.manifest import Manifest, utc_now
from ponder.runtime._bundle.validate import FORMAT, SCHEMA_VERSION, validate_manifest

_REEXPORT = "re-export the bundle (ponder export)"


@dataclass(frozen=True)
class Bundle:
    """A verified bundle folder. `raw` is manifest.json as read, with any keys that a newer minor
    version added and `manifest` does not model."""

    root: Path
    manifest: Manifest
    raw: dict[str, Any]

    @classmethod
    def open(cls, path: str | Path, *, verify_hashes: bool = True) -> Bundle:
        """Read `path`/manifest.json, validate it, and check every listed file's size and (with
        `verify_hashes`, which reads every file) sha256. Any problem raises BundleError."""
        root = Path(path)
        raw = _read_json(root)
        manifest = Manifest.from_dict(raw)
        digest = manifest_digest(raw)
        if digest != raw["manifest_sha256"]:
            raise BundleError(
                f"{MANIFEST} was edited after export: it records manifest_sha256 "
                f"{raw['manifest_sha256'][:12]}... but its content hashes to {digest[:12]}...; "
                f"undo the edit or {_REEXPORT}. To seal a deliberate edit, rewrite it with "
                "ponder.runtime.write_manifest."
            )
        bundle = cls(root, manifest, raw)
        bad = [c for c in bundle.check_files(verify_hashes=verify_hashes) if not c.ok]
        if bad:
            listed = "\n".join(f"  - {c.problem}" for c in bad)
            raise BundleError(
                f"bundle {root} has {len(bad)} bad file(s):\n{listed}\n"
                f"Copy the whole bundle folder again, or {_REEXPORT}."
            )
        return bundle

    def path(self, relative: str) -> Path:
        """The absolute location of a path inside the bundle (BundleError if it would leave it)."""
        return self.root / check_relative(relative)

    @property
    def samples_path(self) -> Path:
        """The stored sample inputs and eager outputs (`samples.npz` unless the export named
        another file)."""
        return self.path((self.manifest.config.get("export") or {}).get("samples", SAMPLES))

    @property
    def pte_path(self) -> Path:
        """The ExecuTorch program, one method per stage (BundleError if the bundle has none)."""
        if PTE not in self.manifest.files:
            raise BundleError(
                f"bundle {self.root} has no ExecuTorch program ({PTE} is not in its files); use "
                "the ONNX files, or re-export with executorch installed: "
                "pip install 'ponder[export]'"
            )
        return self.path(PTE)

    @property
    def int8_pte_path(self) -> Path:
        """The int8 ExecuTorch program (BundleError if the bundle has none)."""
        pte = (self.manifest.quantization or {}).get("pte")
        if pte is None:
            raise BundleError(f"bundle {self.root} has no int8 program; {_REEXPORT} with int8")
        return self.path(pte)

    def onnx_path(self, stage: int, int8: bool = False) -> Path:
        """The ONNX file of stage `stage` (fp32, or the int8 variant)."""
        stages = self.manifest.stages
        if not 0 <= stage < len(stages):
            raise ConfigError(
                f"stage {stage} does not exist; this bundle has stages 0..{len(stages) - 1}"
            )
        onnx = stages[stage].onnx
        if onnx is None:
            raise BundleError(
                f"bundle {self.root} has no ONNX files; use its ExecuTorch program, or "
                f"{_REEXPORT} with --target onnx or all"
            )
        if not int8:
            return self.path(onnx)
        onnx_dir = (self.manifest.quantization or {}).get("onnx_dir")
        if onnx_dir is None:
            raise BundleError(f"bundle {self.root} has no int8 ONNX files; {_REEXPORT} with int8")
        return self.path(int8_onnx(onnx_dir, onnx))

    def check_files(self, *, verify_hashes: bool = True) -> list[FileCheck]:
        """One result per file in the manifest's `files`: present, right size, right sha256."""
        return check_files(self.root, self.manifest.files, verify_hashes=verify_hashes)


def _read_json(root: Path) -> Any:
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "does not exist"
        raise BundleError(
            f"bundle folder {root} {what}; pass the folder that `ponder export` wrote "
            f"(the one holding {MANIFEST})"
        )
    file = root / MANIFEST
    if not file.is_file():
        raise BundleError(
            f"{root} has no {MANIFEST}: it is not a ponder bundle, or its export did not "
            f"finish; {_REEXPORT}"
        )
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise BundleError(
            f"{file} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}); the file "
            f"is damaged or was edited by hand: {_REEXPORT}"
        ) from None
    except UnicodeDecodeError:
        raise BundleError(f"{file} is not UTF-8 text; the file is damaged: {_REEXPORT}") from None


def write_manifest(root: str | Path, manifest: dict[str, Any], files: list[str]) -> dict[str, Any]:
    """Seal a bundle: hash `files` (paths relative to `root`, already written), fill `files` and
    `manifest_sha256`, validate, and write `root`/manifest.json. Missing `format`,
    `schema_version`, `ponder_version` and `created_utc` are filled in. Returns the final dict."""
    root = Path(root)
    if not root.is_dir():
        raise BundleError(f"cannot write a manifest into {root}: no such folder")
    try:  # a JSON round trip, so the digest is taken over exactly what a reader will parse
        d = json.loads(json.dumps(manifest, ensure_ascii=False))
    except (TypeError, ValueError) as e:
        raise BundleError(f"the manifest holds a value JSON cannot store: {e}") from None
    d.pop("manifest_sha256", None)
    defaults = {"format": FORMAT, "schema_version": SCHEMA_VERSION, "ponder_version": __version__}
    for key, value in {**defaults, "created_utc": utc_now()}.items():
        d.setdefault(key, value)
    d["files"] = {rel: _file_entry(root, rel) for rel in sorted(set(files))}
    d["manifest_sha256"] = manifest_digest(d)
    validate_manifest(d)
    tmp = root / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(d, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, root / MANIFEST)  # a reader never sees a half-written manifest
    return d


def _file_entry(root: Path, rel: str) -> dict[str, Any]:
    path = root / check_relative(rel)
    if rel == MANIFEST:
        raise BundleError(f"{MANIFEST} cannot be listed in its own files table")
    if not path.is_file():
        raise BundleError(f"cannot hash {rel}: no such file in {root}; write it before sealing")
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}
