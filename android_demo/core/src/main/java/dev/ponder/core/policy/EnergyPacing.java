package dev.ponder.core.policy;

/**
 * At most {@code batteryPercent} of a {@code batteryWh} battery spent on inference per window of
 * {@code windowS} seconds, whichever rule holds (Python's EnergyPacing, a policy file's [pacing]).
 */
public record EnergyPacing(double batteryPercent, double windowS, double batteryWh) {
  static final double MJ_PER_WH = 3.6e6;

  public EnergyPacing {
    String where = "policy [pacing]";
    PolicySpec.number(where, "battery_percent", batteryPercent, 0, 100, true);
    PolicySpec.number(where, "window_s", windowS, 0, Double.POSITIVE_INFINITY, true);
    PolicySpec.number(where, "battery_wh", batteryWh, 0, Double.POSITIVE_INFINITY, true);
    if (Double.isInfinite(windowS) || Double.isInfinite(batteryWh)) {
      throw new PolicyException(where + ": window_s and battery_wh must be finite");
    }
  }

  /** The energy a window may spend, mJ (1 Wh = 3.6e6 mJ). */
  public double budgetMj() {
    return batteryPercent / 100 * batteryWh * MJ_PER_WH;
  }
}
