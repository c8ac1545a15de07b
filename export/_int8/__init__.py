"""int8 export: quantizing stages for both formats, writing them beside fp32, and per-exit accuracy."""
