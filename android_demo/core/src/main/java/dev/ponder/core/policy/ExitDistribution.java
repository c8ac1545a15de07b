package dev.ponder.core.policy;

import dev.ponder.core.Manifest;
import java.util.List;

/**
 * Where the requests of an operating point leave (Python's ExitDistribution): {@code shares[k]}
 * of them at stage k; every request still running leaves at {@code lastStage}. {@code reach[k]},
 * the share that runs stage k, is the sum of the shares at k and after, so a request's expected
 * cost is sum_k reach[k] * cost[k]. Sums run in Python's order so that both sides agree bit for
 * bit.
 */
public final class ExitDistribution {
  public final double[] shares;
  public final int lastStage;

  private ExitDistribution(double[] shares, int lastStage) {
    this.shares = shares;
    this.lastStage = lastStage;
  }

  public static ExitDistribution of(Manifest.OperatingPoint point, int numStages) {
    int last = point.lastStage(numStages);
    double[] out = new double[numStages];
    List<Double> fr = point.exitFractions();
    if (fr.isEmpty()) {
      out[last] = 1.0;
      return new ExitDistribution(out, last);
    }
    double total = 0.0;
    boolean negative = false;
    for (double f : fr) {
      total += f;
      negative |= f < 0;
    }
    if (fr.size() != numStages || negative || Math.abs(total - 1.0) > 0.01) {
      throw new PolicyException(
          "operating point '" + point.name() + "': exit_fractions " + fr + " must be " + numStages
              + " non-negative shares summing to 1 (one per stage); re-export the bundle");
    }
    for (int k = 0; k <= last; k++) {
      out[k] = fr.get(k);
    }
    double rest = 0.0;
    for (int k = last + 1; k < numStages; k++) {
      rest += fr.get(k);
    }
    out[last] += rest;
    return new ExitDistribution(out, last);
  }

  /** Share of requests that run stage k: those leaving at k or later. */
  public double[] reach() {
    double[] reach = new double[shares.length];
    double total = 0.0;
    for (int k = shares.length - 1; k >= 0; k--) {
      total = k == shares.length - 1 ? shares[k] : total + shares[k];
      reach[k] = total;
    }
    return reach;
  }

  /** Expected cost of one request: sum_k reach[k] * stageCosts[k]. */
  public double expected(double[] stageCosts) {
    double[] reach = reach();
    double sum = 0.0;
    for (int k = 0; k < reach.length; k++) {
      sum += reach[k] * stageCosts[k];
    }
    return sum;
  }

  /** The stage by which {@code quantile} of the requests have left. */
  public int quantileStage(double quantile) {
    double total = 0.0;
    for (int k = 0; k < shares.length; k++) {
      total += shares[k];
      if (total >= quantile - 1e-9) {
        return k;
      }
    }
    return lastStage;
  }

  /** Cost of the stages up to quantileStage(quantile). */
  public double costToQuantile(double[] stageCosts, double quantile) {
    double sum = 0.0;
    for (int k = 0; k <= quantileStage(quantile); k++) {
      sum += stageCosts[k];
    }
    return sum;
  }
}
