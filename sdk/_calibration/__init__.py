"""Calibration: per-exit metrics, thresholds by budget matching and risk control, evaluation,
operating points, and the tables and plots that report them."""

from ponder._calibration.evaluate import ExitData, calibrate, evaluate, exit_data
from ponder._calibration.points import measure_point, operating_points
from ponder._calibration.thresholds import RiskControlResult, thresholds_for_budget

__all__ = [
    "ExitData",
    "RiskControlResult",
    "calibrate",
    "evaluate",
    "exit_data",
    "measure_point",
    "operating_points",
    "thresholds_for_budget",
]
