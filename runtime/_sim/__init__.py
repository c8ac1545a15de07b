"""SIMULATED devices and usage traces for policy tests, and `simulate` (`ponder simulate`)."""
