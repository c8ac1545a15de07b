package dev.ponder.core;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * {@code java dev.ponder.core.Inspect BUNDLE}: verifies the bundle and prints what this core read
 * from it as one line of JSON (the Python tests compare it with ponder.runtime's reading).
 */
public final class Inspect {
  private Inspect() {}

  public static void main(String[] args) {
    if (args.length != 1) {
      System.err.println("usage: Inspect BUNDLE");
      System.exit(2);
    }
    try {
      Manifest m = Manifest.open(Path.of(args[0]), true);
      System.out.println(Json.canonical(summary(m)));
    } catch (BundleException e) {
      System.err.println("error: " + e.getMessage());
      System.exit(1);
    }
  }

  static Map<String, Object> summary(Manifest m) {
    Map<String, Object> out = new LinkedHashMap<>();
    out.put("model_id", m.modelId);
    out.put("manifest_sha256", m.sha256);
    out.put("exit_rule", m.exitRule);
    List<Object> stages = new ArrayList<>();
    for (Manifest.Stage s : m.stages) {
      Map<String, Object> d = new LinkedHashMap<>();
      d.put("method", s.method());
      d.put("exit", s.exit());
      d.put("flops", new Json.Number(Long.toString(s.flops())));
      stages.add(d);
    }
    out.put("stages", stages);
    List<Object> points = new ArrayList<>();
    for (Manifest.OperatingPoint p : m.operatingPoints) {
      Map<String, Object> d = new LinkedHashMap<>();
      d.put("name", p.name());
      List<Object> thresholds = new ArrayList<>();
      for (double t : p.thresholds()) {
        thresholds.add(Double.isInfinite(t) ? null : new Json.Number(Double.toString(t)));
      }
      d.put("thresholds", thresholds);
      d.put("moe_tau", p.moeTau() == null ? null : new Json.Number(Double.toString(p.moeTau())));
      points.add(d);
    }
    out.put("operating_points", points);
    return out;
  }
}
