package dev.ponder.core.policy;

import dev.ponder.core.Json;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * A whole policy (a port of Python's PolicySpec): rules tried in order (the first that holds
 * decides), the default when none does, the hysteresis settings, the latency quantile, and
 * optional energy pacing. Read from the JSON form of a policy file (the keys of the TOML form;
 * {@code rule} a list): {@code ponder.runtime.load_policy(path).to_dict()} writes it.
 */
public final class PolicySpec {
  static final List<String> HYSTERESIS =
      List.of("battery_band", "temperature_band", "accuracy_margin", "cost_margin", "min_requests");

  public final PolicyRule defaultRule;
  public final List<PolicyRule> rules;
  public final double batteryBand;
  public final double temperatureBand;
  public final double accuracyMargin;
  public final double costMargin;
  public final int minRequests;
  public final double latencyQuantile;
  public final EnergyPacing pacing; // null: none

  public PolicySpec(
      PolicyRule defaultRule,
      List<PolicyRule> rules,
      double batteryBand,
      double temperatureBand,
      double accuracyMargin,
      double costMargin,
      int minRequests,
      double latencyQuantile,
      EnergyPacing pacing) {
    this.defaultRule = defaultRule;
    this.rules = List.copyOf(rules);
    this.batteryBand = batteryBand;
    this.temperatureBand = temperatureBand;
    this.accuracyMargin = accuracyMargin;
    this.costMargin = costMargin;
    this.minRequests = minRequests;
    this.latencyQuantile = latencyQuantile;
    this.pacing = pacing;
    if (!(latencyQuantile > 0 && latencyQuantile <= 1)) {
      throw new PolicyException(
          "policy: latency_quantile must be in (0, 1] (0.99: the budget holds for 99% of requests;"
              + " 1: for every request), got " + latencyQuantile);
    }
    number("policy hysteresis", "battery_band", batteryBand, 0, 100, false);
    number("policy hysteresis", "temperature_band", temperatureBand, 0, Double.POSITIVE_INFINITY, false);
    number("policy hysteresis", "accuracy_margin", accuracyMargin, 0, 1, false);
    number("policy hysteresis", "cost_margin", costMargin, 0, 1, false);
    if (minRequests < 0) {
      throw new PolicyException("policy hysteresis: min_requests must be an int >= 0, got " + minRequests);
    }
    if (defaultRule.hasConditions()) {
      throw new PolicyException("policy [default] cannot have conditions; move them to a [[rule]]");
    }
    Set<String> names = new HashSet<>();
    names.add(defaultRule.name());
    for (PolicyRule r : this.rules) {
      if (!r.hasConditions()) {
        throw new PolicyException(
            "policy rule '" + r.name() + "' has no `when` conditions, so every rule after it would"
                + " be unreachable; put its budgets in [default] or add a condition");
      }
      if (!names.add(r.name())) {
        throw new PolicyException("policy rule name '" + r.name() + "' is used twice; names must be unique");
      }
    }
  }

  /** One budget for every state, the other settings at their defaults. */
  public static PolicySpec simple(Double latencyMs, Double energyMj) {
    return new PolicySpec(
        PolicyRule.budgets("default", latencyMs, energyMj), List.of(), 2.0, 2.0, 0.005, 0.05, 0, 0.99, null);
  }

  /** Whether some budget (or pacing) caps energy, so the cost model must know energy. */
  public boolean needsEnergy() {
    if (pacing != null || defaultRule.needsEnergy()) {
      return true;
    }
    return rules.stream().anyMatch(PolicyRule::needsEnergy);
  }

  /** Reads a policy file in its JSON form; every error names the file and what to fix. */
  public static PolicySpec load(Path path) {
    if (!path.toString().endsWith(".json")) {
      throw new PolicyException(
          path + ": the device reads the JSON form of a policy; write it with "
              + "`python -c \"import json, ponder.runtime as r; print(json.dumps("
              + "r.load_policy('policy.toml').to_dict()))\" > policy.json`");
    }
    String text;
    try {
      text = Files.readString(path, StandardCharsets.UTF_8);
    } catch (IOException e) {
      throw new PolicyException("no policy file at " + path + " (" + e.getMessage() + "); check the path");
    }
    try {
      return fromJson(text);
    } catch (PolicyException e) {
      throw new PolicyException(path + ": " + e.getMessage());
    }
  }

  public static PolicySpec fromJson(String text) {
    Object d;
    try {
      d = Json.parse(text);
    } catch (IllegalArgumentException e) {
      throw new PolicyException("not valid JSON (" + e.getMessage() + ")");
    }
    return fromMap(table(d, "a policy"));
  }

  static PolicySpec fromMap(Map<String, Object> d) {
    unknown(
        "policy",
        d.keySet(),
        List.of("format", "version", "latency_quantile", "hysteresis", "pacing", "default", "rule"));
    Object format = d.getOrDefault("format", "ponder-policy");
    Object version = d.get("version");
    if (!"ponder-policy".equals(format) || (version != null && ((Json.Number) version).value() != 1)) {
      throw new PolicyException(
          "not a ponder policy of version 1 (format " + format + ", version " + version + ")");
    }
    Map<String, Object> hyst =
        d.containsKey("hysteresis") ? table(d.get("hysteresis"), "policy: [hysteresis]") : Map.of();
    unknown("policy [hysteresis]", hyst.keySet(), HYSTERESIS);
    List<PolicyRule> rules = new ArrayList<>();
    Object listed = d.getOrDefault("rule", List.of());
    if (!(listed instanceof List<?> items)) {
      throw new PolicyException("policy: `rule` must be a list of tables (write [[rule]] in TOML)");
    }
    for (int i = 0; i < items.size(); i++) {
      rules.add(PolicyRule.fromMap(items.get(i), "rule " + i));
    }
    EnergyPacing pacing = null;
    if (d.get("pacing") != null) {
      Map<String, Object> p = table(d.get("pacing"), "policy: [pacing]");
      unknown("policy [pacing]", p.keySet(), List.of("battery_percent", "window_s", "battery_wh"));
      Double percent = optional(p, "battery_percent", "policy [pacing]");
      Double wh = optional(p, "battery_wh", "policy [pacing]");
      if (percent == null || wh == null) {
        throw new PolicyException(
            "policy [pacing]: battery_percent and battery_wh (the battery's capacity in Wh) are"
                + " both needed, e.g. battery_percent = 3, battery_wh = 15");
      }
      Double window = optional(p, "window_s", "policy [pacing]");
      pacing = new EnergyPacing(percent, window == null ? 3600.0 : window, wh);
    }
    Double q = optional(d, "latency_quantile", "policy");
    Double minRequests = optional(hyst, "min_requests", "policy hysteresis");
    if (minRequests != null && minRequests != Math.rint(minRequests)) {
      throw new PolicyException("policy hysteresis: min_requests must be an int >= 0, got " + minRequests);
    }
    return new PolicySpec(
        PolicyRule.fromMap(d.getOrDefault("default", Map.of()), "default"),
        rules,
        orElse(optional(hyst, "battery_band", "policy hysteresis"), 2.0),
        orElse(optional(hyst, "temperature_band", "policy hysteresis"), 2.0),
        orElse(optional(hyst, "accuracy_margin", "policy hysteresis"), 0.005),
        orElse(optional(hyst, "cost_margin", "policy hysteresis"), 0.05),
        minRequests == null ? 0 : minRequests.intValue(),
        q == null ? 0.99 : q,
        pacing);
  }

  private static double orElse(Double value, double otherwise) {
    return value == null ? otherwise : value;
  }

  static Double optional(Map<String, Object> d, String key, String where) {
    Object value = d.get(key);
    if (value == null) {
      return null;
    }
    if (!(value instanceof Json.Number n)) {
      throw new PolicyException(where + ": " + key + " must be a number, got " + value);
    }
    return n.value();
  }

  @SuppressWarnings("unchecked")
  static Map<String, Object> table(Object value, String what) {
    if (!(value instanceof Map)) {
      throw new PolicyException(what + " must be a table of keys");
    }
    return (Map<String, Object>) value;
  }

  static void unknown(String where, Collection<String> keys, List<String> allowed) {
    for (String key : keys) {
      if (!allowed.contains(key)) {
        throw new PolicyException(
            where + ": unknown key '" + key + "' (allowed: " + String.join(", ", allowed) + ")");
      }
    }
  }

  /** null passes; otherwise a real number in [lo, hi] ((lo, hi] when loOpen). */
  static void number(String where, String name, Double value, double lo, double hi, boolean loOpen) {
    if (value == null) {
      return;
    }
    if (value.isNaN() || value < lo || (loOpen && value == lo) || value > hi) {
      throw new PolicyException(
          where + ": " + name + " = " + value + " is outside " + (loOpen ? "(" : "[") + lo + ", " + hi + "]");
    }
  }
}
