"""The engine: stage by stage with per-sample exits and anytime deadlines, input checks, results,
request loops and per-stage profiling."""
