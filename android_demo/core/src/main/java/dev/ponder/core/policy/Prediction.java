package dev.ponder.core.policy;

/**
 * What a point is expected to cost and score per request at batch 1 (as Python's Prediction):
 * mean latency over its exit distribution, worst = the latency-quantile tail, mean energy (null:
 * unknown); latencies are NaN while no stage cost is known.
 */
public record Prediction(
    Double accuracy,
    double meanLatencyMs,
    double worstLatencyMs,
    Double meanEnergyMj,
    Double flopsFraction) {}
