"""ponder.export: device bundles — ExecuTorch (one method per stage), ONNX per stage, manifest —
validated against the eager model when written and re-verified from disk."""

from ponder.export._bundle import TARGETS, export_bundle
from ponder.export._checkpoint import export_checkpoint
from ponder.export._split import export_split
from ponder.export._verify import verify_bundle

__all__ = ["TARGETS", "export_bundle", "export_checkpoint", "export_split", "verify_bundle"]
