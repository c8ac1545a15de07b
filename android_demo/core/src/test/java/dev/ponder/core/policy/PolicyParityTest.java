package dev.ponder.core.policy;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import dev.ponder.core.Json;
import dev.ponder.core.Manifest;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;

/**
 * Replays the decision traces Python's Policy wrote ({@code PONDER_TEST_POLICY_TRACES}, see
 * tests/android/test_java_policy.py): the same points, cost table, policy, device states and
 * stage observations must give the same decision at every step — point, rule, feasibility,
 * change, how and why kept — and the same predictions (to 1e-9, relative).
 */
class PolicyParityTest {
  static final double TOL = 1e-9;

  @Test
  void decisionsMatchPythonTraces() throws Exception {
    String dir = System.getenv("PONDER_TEST_POLICY_TRACES");
    assumeTrue(dir != null, "PONDER_TEST_POLICY_TRACES is not set (pytest sets it)");
    List<Path> files;
    try (Stream<Path> listed = Files.list(Path.of(dir))) {
      files = listed.filter(p -> p.toString().endsWith(".json")).sorted().toList();
    }
    assertTrue(files.size() >= 4, "expected the 4 traces Python writes, found " + files);
    int decisions = 0;
    for (Path file : files) {
      decisions += replay(file);
    }
    System.out.println(decisions + " decisions replayed from " + files.size() + " traces");
  }

  @SuppressWarnings("unchecked")
  static int replay(Path file) throws Exception {
    Map<String, Object> t = (Map<String, Object>) Json.parse(Files.readString(file, StandardCharsets.UTF_8));
    int stages = (int) num(t.get("num_stages"));
    List<Manifest.OperatingPoint> points = new ArrayList<>();
    for (Object p : (List<Object>) t.get("points")) {
      points.add(Manifest.OperatingPoint.fromMap((Map<String, Object>) p));
    }
    CostTable table = t.get("table") == null ? null : CostTable.fromJson(Json.canonical(t.get("table")));
    List<Object> flops = (List<Object>) t.get("stage_flops");
    double[] f = new double[flops.size()];
    for (int k = 0; k < f.length; k++) {
      f[k] = num(flops.get(k));
    }
    Double power = t.get("power_w") == null ? null : num(t.get("power_w"));
    CostModel cm = new CostModel(stages, table, f, power, num(t.get("alpha")), num(t.get("tail")));
    Policy policy = new Policy(points, cm, PolicySpec.fromMap((Map<String, Object>) t.get("spec")));
    int step = 0;
    for (Object item : (List<Object>) t.get("events")) {
      Map<String, Object> e = (Map<String, Object>) item;
      if (e.containsKey("observe")) {
        List<Object> o = (List<Object>) e.get("observe");
        policy.observe((int) num(o.get(0)), num(o.get(1)), o.get(2) == null ? null : num(o.get(2)), (int) num(o.get(3)));
      } else if (e.containsKey("request")) {
        List<Object> o = (List<Object>) e.get("request");
        cm.observeRequest(num(o.get(0)), o.get(1) == null ? null : num(o.get(1)));
      } else {
        Map<String, Object> s = (Map<String, Object>) e.get("decide");
        DeviceState state =
            new DeviceState(
                s.get("battery_percent") == null ? null : num(s.get("battery_percent")),
                (Boolean) s.get("charging"),
                s.get("temperature_c") == null ? null : num(s.get("temperature_c")),
                num(s.get("speed")),
                num(s.get("time_s")));
        Decision d = policy.decide(state);
        check(file.getFileName() + " step " + step, (Map<String, Object>) e.get("expect"), d);
        step++;
      }
    }
    return step;
  }

  @SuppressWarnings("unchecked")
  static void check(String where, Map<String, Object> x, Decision d) {
    String got =
        d.point().name() + " rule=" + d.ruleName() + " how=" + d.how() + " kept=" + d.kept()
            + " best=" + d.best() + " feasible=" + d.feasible() + " changed=" + d.changed();
    String want =
        x.get("point") + " rule=" + x.get("rule") + " how=" + x.get("how") + " kept=" + x.get("kept")
            + " best=" + (int) num(x.get("best")) + " feasible=" + x.get("feasible") + " changed="
            + x.get("changed");
    assertEquals(want, got, where + ": the Java policy decided otherwise");
    assertEquals((int) num(x.get("index")), d.index(), where);
    List<Object> limits = (List<Object>) x.get("limits");
    for (int i = 0; i < 3; i++) {
      close(where + " limit " + i, limits.get(i), d.limits()[i]);
    }
    Map<String, Object> p = (Map<String, Object>) x.get("prediction");
    close(where + " mean latency", p.get("mean_latency_ms"), d.prediction().meanLatencyMs());
    close(where + " worst latency", p.get("worst_latency_ms"), d.prediction().worstLatencyMs());
    Object energy = p.get("mean_energy_mj");
    if (energy == null) {
      assertEquals(null, d.prediction().meanEnergyMj(), where + " energy");
    } else {
      close(where + " energy", energy, d.prediction().meanEnergyMj());
    }
    close(where + " flops", p.get("flops_fraction"), d.prediction().flopsFraction());
  }

  /** null stands for infinity or NaN (JSON has neither). */
  static void close(String where, Object expected, Double got) {
    if (expected == null) {
      if (got != null && Double.isFinite(got)) {
        fail(where + ": expected no finite value, got " + got);
      }
      return;
    }
    double want = num(expected);
    if (got == null || Math.abs(got - want) > TOL * Math.max(1.0, Math.abs(want))) {
      fail(where + ": expected " + want + ", got " + got);
    }
  }

  static double num(Object o) {
    return ((Json.Number) o).value();
  }
}
