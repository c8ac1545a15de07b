"""The operating points of a bundle: the table its manifest holds, read back as `OperatingPoint`s
(the one type the sdk's calibration wrote them with)."""

from __future__ import annotations

from typing import Any

from ponder._core.errors import ConfigError
from ponder._core.points import OperatingPoint

__all__ = ["OperatingPoint", "operating_points"]


def operating_points(manifest: Any) -> list[OperatingPoint]:
    """The operating points of a `Manifest` (rows without thresholds are skipped: they cannot
    be run), in the manifest's order. `ponder.operating_points(data)` is where they come from:
    it measures them on calibration data, and export writes them into the manifest."""
    num_exits = manifest.num_exits
    points = []
    for row in manifest.operating_points:
        if row.get("thresholds") is None:
            continue
        point = OperatingPoint.from_dict(row)
        if len(point.thresholds) != num_exits:
            raise ConfigError(
                f"operating point {point.name!r} has {len(point.thresholds)} thresholds for "
                f"{num_exits} early exits; re-export the bundle"
            )
        points.append(point)
    return points
