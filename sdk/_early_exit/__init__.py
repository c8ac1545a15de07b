"""Early exits: `EarlyExitConfig`, the exit stack and heads (ZTW cascade and ensemble), per-forward
runs, adaptive inference with batch shrinking, exit training and FLOPs per exit."""
