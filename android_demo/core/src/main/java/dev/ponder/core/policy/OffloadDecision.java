package dev.ponder.core.policy;

import java.util.List;

/**
 * Where the next request is answered (Python's OffloadDecision): {@code offload} false — run
 * {@code local.point()} on the device — or true, offload at {@code cloudPoint}; {@code probe}:
 * offloaded to measure the link, not because it was predicted better. {@code cloud}: the
 * predictions for each offload point (empty while the link is unknown or the service backs off);
 * {@code reason}: why, in one line.
 */
public record OffloadDecision(
    boolean offload,
    OffloadPoint cloudPoint,
    Decision local,
    List<CloudPrediction> cloud,
    boolean probe,
    String reason) {

  /** The name of the chosen point, local or cloud. */
  public String pointName() {
    return offload ? cloudPoint.name() : local.point().name();
  }

  /** What offloading at one point is predicted to cost a request (latency in real ms). */
  public record CloudPrediction(
      OffloadPoint point,
      double edgeMs,
      double linkMs,
      double serverMs,
      double worstMs,
      Double energyMj,
      String breaks) {
    public double latencyMs() {
      return edgeMs + linkMs + serverMs;
    }
  }
}
