"""Exported-vs-eager comparison for the export writer; the implementation is torch-free and lives
in ponder.runtime._bundle.compare, where `ponder verify` uses it on devices without torch."""

from ponder.runtime._bundle.compare import (
    TOLERANCES,
    Comparison,
    check_comparisons,
    compare_outputs,
)

__all__ = ["TOLERANCES", "Comparison", "check_comparisons", "compare_outputs"]
