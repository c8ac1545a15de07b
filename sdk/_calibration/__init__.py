"""Calibration: per-exit metrics, thresholds by budget matching and risk control, evaluation,
operating points, and the tables and plots that report them."""
