"""`verify_bundle`: re-check a bundle on disk — hashes, schema, every method and ONNX stage run
on the stored sample inputs (whole batch and batch of one) against the stored eager outputs.
The check itself is ponder.runtime's (torch-free, the one `ponder verify` runs); on the export
side every format must run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ponder.runtime._bundle.compare import Comparison
from ponder.runtime._bundle.verify import verify_bundle as _verify

__all__ = ["verify_bundle"]


def verify_bundle(path: str | Path, echo: Callable[[str], None] = print) -> list[Comparison]:
    """Raise BundleError (files, manifest), ExportMismatchError (results) or
    MissingDependencyError (a runtime for one of the bundle's formats is not installed);
    return the rows."""
    return _verify(path, echo, require_all=True).rows
