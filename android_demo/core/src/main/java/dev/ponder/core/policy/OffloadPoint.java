package dev.ponder.core.policy;

import dev.ponder.core.Json;
import java.util.Map;

/**
 * Offloading at one keep ratio and codec (Python's OffloadPoint): the split model's accuracy
 * there (null: unknown) and the mean payload bytes per sample, both measured at export; a split
 * bundle's split.json lists them under {@code offload_points}.
 */
public record OffloadPoint(double keep, String codec, Double accuracy, double payloadBytes) {

  /** "cloud keep 0.5 int8", as Python names it. */
  public String name() {
    return "cloud keep " + general(keep) + " " + codec;
  }

  public static OffloadPoint fromMap(Map<String, Object> d) {
    try {
      Object acc = d.get("accuracy");
      return new OffloadPoint(
          ((Json.Number) d.get("keep")).value(),
          (String) d.get("codec"),
          acc == null ? null : ((Json.Number) acc).value(),
          ((Json.Number) d.get("payload_bytes")).value());
    } catch (ClassCastException | NullPointerException e) {
      throw new PolicyException("offload point " + d + " is malformed; re-export the bundle");
    }
  }

  /** Python's {@code format(x, "g")} for the keep ratios a split uses (0.1 ... 1). */
  static String general(double x) {
    String s = Double.toString(x);
    return s.endsWith(".0") ? s.substring(0, s.length() - 2) : s;
  }
}
