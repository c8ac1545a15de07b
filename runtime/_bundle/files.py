"""Checks the files on disk against the manifest's `files` table (presence, size, sha256)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ponder.runtime._bundle.digest import check_relative, sha256_file
from ponder.runtime._bundle.layout import MANIFEST
from ponder.runtime._bundle.manifest import FileEntry

Status = Literal["ok", "missing", "size", "sha256"]


@dataclass(frozen=True)
class FileCheck:
    """The result for one listed file. `actual_sha256` is None when hashes were not verified or
    the file could not be hashed (missing, or already the wrong size)."""

    path: str
    status: Status
    expected: FileEntry
    actual_bytes: int | None = None
    actual_sha256: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def problem(self) -> str:
        """One line saying what is wrong with the file ('' when nothing is)."""
        if self.status == "missing":
            return f"{self.path}: listed in {MANIFEST} but missing"
        if self.status == "size":
            return (
                f"{self.path}: {self.actual_bytes} bytes, manifest says {self.expected.bytes} "
                "(corrupt or truncated)"
            )
        if self.status == "sha256":
            return (
                f"{self.path}: sha256 {self.actual_sha256[:12]}..., manifest says "
                f"{self.expected.sha256[:12]}... (corrupt or truncated)"
            )
        return ""


def check_files(
    root: Path, files: Mapping[str, FileEntry], *, verify_hashes: bool = True
) -> list[FileCheck]:
    """One `FileCheck` per listed file, in the manifest's order. Sizes are always compared;
    hashes (a full read of every file) only with `verify_hashes`."""
    return [_check(root, rel, entry, verify_hashes) for rel, entry in files.items()]


def _check(root: Path, rel: str, entry: FileEntry, verify_hashes: bool) -> FileCheck:
    path = root / check_relative(rel)
    if not path.is_file():
        return FileCheck(rel, "missing", entry)
    size = path.stat().st_size
    if size != entry.bytes:
        return FileCheck(rel, "size", entry, size)
    if not verify_hashes:
        return FileCheck(rel, "ok", entry, size)
    digest = sha256_file(path)
    status: Status = "ok" if digest == entry.sha256 else "sha256"
    return FileCheck(rel, status, entry, size, digest)
