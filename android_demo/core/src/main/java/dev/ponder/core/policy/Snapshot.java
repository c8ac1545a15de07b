package dev.ponder.core.policy;

import java.util.Arrays;
import java.util.Comparator;

/**
 * What a policy predicts for each of its points at one cost-model version (Python's Snapshot):
 * mean and worst latency at full clock (in FLOPs while no cost is known), mean energy, and which
 * points meet a set of limits {worst latency, energy, accuracy floor}.
 */
final class Snapshot {
  final int version;
  final boolean known;
  final boolean hasEnergy;
  final double[] meanLat;
  final double[] worstLat;
  final double[] meanEn;
  final double[] cost;
  final Double fullEn;
  private final double[] accuracy;
  private Integer[] byCost;

  Snapshot(CostModel cm, double[][] reach, boolean[][] worst, double[] accuracy) {
    this.version = cm.version();
    this.known = cm.known();
    this.accuracy = accuracy;
    int n = accuracy.length;
    double[] lat;
    double[] en;
    double[] mean;
    double[] tail;
    double extra;
    if (known) {
      lat = cm.stageLatencyMs();
      en = cm.stageEnergyMj(lat);
      mean = cm.stepped(lat);
      tail = cm.stepped(cm.stageTailMs(lat));
      extra = cm.requestMs;
    } else {
      lat = cm.stageFlops.clone();
      en = null;
      mean = lat;
      tail = lat;
      extra = 0.0;
    }
    meanLat = new double[n];
    worstLat = new double[n];
    meanEn = new double[n];
    for (int p = 0; p < n; p++) {
      double w = 0.0;
      for (int k = 0; k < tail.length; k++) {
        w += worst[p][k] ? tail[k] : 0.0;
      }
      meanLat[p] = Policy.dot(reach[p], mean) + extra;
      worstLat[p] = w + extra;
      meanEn[p] = en == null ? 0.0 : Policy.dot(reach[p], en);
    }
    hasEnergy = en != null;
    double full = 0.0;
    if (en != null) {
      for (double e : en) {
        full += e;
      }
    }
    fullEn = en == null ? null : full;
    cost = hasEnergy ? meanEn : meanLat;
  }

  boolean meets(int i, double[] limits) {
    return worstLat[i] <= limits[0] && meanEn[i] <= limits[1] && accuracy[i] >= limits[2];
  }

  /** Indices cheapest first (cost), then by worst latency, then most accurate (stable). */
  Integer[] byCost() {
    if (byCost == null) {
      byCost = new Integer[accuracy.length];
      for (int i = 0; i < byCost.length; i++) {
        byCost[i] = i;
      }
      Arrays.sort(
          byCost,
          Comparator.<Integer>comparingDouble(i -> cost[i])
              .thenComparingDouble(i -> worstLat[i])
              .thenComparingDouble(i -> -accuracy[i]));
    }
    return byCost;
  }

  /** The point with the least worst latency, then the least cost (the first of equals). */
  int cheapest() {
    int best = 0;
    for (int i = 1; i < cost.length; i++) {
      if (worstLat[i] < worstLat[best] || (worstLat[i] == worstLat[best] && cost[i] < cost[best])) {
        best = i;
      }
    }
    return best;
  }
}
