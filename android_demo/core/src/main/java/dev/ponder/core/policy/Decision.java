package dev.ponder.core.policy;

import dev.ponder.core.Manifest;

/**
 * The point to run next (as Python's Decision): under which rule, whether it meets every budget
 * ({@code feasible}; false: none does, so the cheapest runs), whether it differs from the previous
 * decision, and why — {@code how} the best point was found ("accuracy", "cost" under a floor,
 * "floor" when the floor cannot be met, "cheapest" when no point meets the budgets, "unknown"
 * while no cost is known) and {@code kept} ("margin", "dwell" or null) when hysteresis kept the
 * previous point instead of {@code best}. {@code limits}: worst latency at full clock (ms), mean
 * energy (mJ, paced), accuracy floor. {@code rule}: the rule that applied; {@code costs}: what
 * the policy predicted for the chosen point (what offloading is weighed against).
 */
public record Decision(
    Manifest.OperatingPoint point,
    int index,
    String ruleName,
    boolean feasible,
    boolean changed,
    String how,
    String kept,
    int best,
    double[] limits,
    Prediction prediction,
    PolicyRule rule,
    Costs costs) {

  /**
   * The chosen point in the policy's snapshot: whether costs were known, whether they include
   * energy, its cost (mean energy, else mean latency) and mean latency at full clock.
   */
  public record Costs(boolean known, boolean hasEnergy, double cost, double meanLatencyMs) {}

  Decision unchanged() {
    return new Decision(
        point, index, ruleName, feasible, false, how, kept, best, limits, prediction, rule, costs);
  }
}
