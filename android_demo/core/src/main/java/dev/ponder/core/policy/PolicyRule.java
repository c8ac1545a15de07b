package dev.ponder.core.policy;

import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Budgets that apply while every given condition holds (a port of Python's PolicyRule; null =
 * not given). Conditions: batteryAbove/batteryBelow (percent, strict), charging, temperatureAbove
 * (°C); a condition on something the device does not report does not hold. Budgets: latencyMs
 * (worst case per request), energyMj (mean per inference), energyFraction (of the full model's
 * mean energy; with energyMj the tighter applies), minAccuracy (a floor).
 */
public record PolicyRule(
    String name,
    Double batteryAbove,
    Double batteryBelow,
    Boolean charging,
    Double temperatureAbove,
    Double latencyMs,
    Double energyMj,
    Double energyFraction,
    Double minAccuracy) {

  static final List<String> CONDITIONS =
      List.of("battery_above", "battery_below", "charging", "temperature_above");
  static final List<String> BUDGETS =
      List.of("latency_ms", "energy_mj", "energy_fraction", "min_accuracy");

  public PolicyRule {
    if (name == null || name.isEmpty()) {
      throw new PolicyException("policy rule name must be a non-empty string");
    }
    String where = "policy rule '" + name + "'";
    PolicySpec.number(where, "battery_above", batteryAbove, 0, 100, false);
    PolicySpec.number(where, "battery_below", batteryBelow, 0, 100, false);
    PolicySpec.number(where, "temperature_above", temperatureAbove, -273.15, Double.POSITIVE_INFINITY, false);
    PolicySpec.number(where, "latency_ms", latencyMs, 0, Double.POSITIVE_INFINITY, true);
    PolicySpec.number(where, "energy_mj", energyMj, 0, Double.POSITIVE_INFINITY, true);
    PolicySpec.number(where, "energy_fraction", energyFraction, 0, 1, true);
    PolicySpec.number(where, "min_accuracy", minAccuracy, 0, 1, false);
    if (batteryAbove != null && batteryBelow != null && batteryAbove >= batteryBelow) {
      throw new PolicyException(
          where + ": battery_above = " + batteryAbove + " and battery_below = " + batteryBelow
              + " never both hold; for a band write battery_above < battery_below");
    }
  }

  /** A rule without conditions: the default's budgets. */
  public static PolicyRule budgets(String name, Double latencyMs, Double energyMj) {
    return new PolicyRule(name, null, null, null, null, latencyMs, energyMj, null, null);
  }

  /** Whether every condition holds; an edge moves outward by its slack (the hysteresis band). */
  public boolean holds(
      Double battery, Boolean charging, Double temperature, double batterySlack, double tempSlack) {
    if (batteryAbove != null && (battery == null || battery <= batteryAbove - batterySlack)) {
      return false;
    }
    if (batteryBelow != null && (battery == null || battery >= batteryBelow + batterySlack)) {
      return false;
    }
    if (this.charging != null && !this.charging.equals(charging)) {
      return false;
    }
    return temperatureAbove == null
        || (temperature != null && temperature > temperatureAbove - tempSlack);
  }

  /** The energy cap per inference in mJ (the tighter of the two forms), infinity if none. */
  public double energyLimit(Double fullEnergyMj) {
    double limit = energyMj == null ? Double.POSITIVE_INFINITY : energyMj;
    if (energyFraction != null && fullEnergyMj != null) {
      limit = Math.min(limit, energyFraction * fullEnergyMj);
    }
    return limit;
  }

  public boolean hasConditions() {
    return batteryAbove != null || batteryBelow != null || charging != null || temperatureAbove != null;
  }

  boolean needsEnergy() {
    return energyMj != null || energyFraction != null;
  }

  /** A rule from a policy file's table: {@code name}, {@code when} = conditions, budgets. */
  static PolicyRule fromMap(Object value, String defaultName) {
    Map<String, Object> d = PolicySpec.table(value, "policy " + defaultName);
    Object n = d.getOrDefault("name", defaultName);
    if (!(n instanceof String name)) {
      throw new PolicyException("policy rule name must be a non-empty string, got " + n);
    }
    String where = "policy rule '" + name + "'";
    PolicySpec.unknown(where, d.keySet(), concat(List.of("name", "when"), BUDGETS));
    Map<String, Object> when =
        d.containsKey("when")
            ? PolicySpec.table(d.get("when"), where + ": `when` (a table like { battery_below = 20 })")
            : new LinkedHashMap<>();
    PolicySpec.unknown(where + ", `when`", when.keySet(), CONDITIONS);
    Object ch = when.get("charging");
    if (ch != null && !(ch instanceof Boolean)) {
      throw new PolicyException(where + ": charging must be true or false, got " + ch);
    }
    return new PolicyRule(
        name,
        PolicySpec.optional(when, "battery_above", where),
        PolicySpec.optional(when, "battery_below", where),
        (Boolean) ch,
        PolicySpec.optional(when, "temperature_above", where),
        PolicySpec.optional(d, "latency_ms", where),
        PolicySpec.optional(d, "energy_mj", where),
        PolicySpec.optional(d, "energy_fraction", where),
        PolicySpec.optional(d, "min_accuracy", where));
  }

  private static List<String> concat(List<String> a, List<String> b) {
    List<String> out = new java.util.ArrayList<>(a);
    out.addAll(b);
    return out;
  }
}
