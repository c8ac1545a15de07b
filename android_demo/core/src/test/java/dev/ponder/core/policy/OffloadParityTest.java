package dev.ponder.core.policy;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import dev.ponder.core.Json;
import dev.ponder.core.Manifest;
import dev.ponder.core.offload.LinkEstimate;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;

/**
 * Replays the offload trace Python's OffloadPolicy wrote ({@code offload.trace} beside the
 * policy traces): the same local policy, offload points, link transfers, device-half and server
 * times, failures and clock must give the same choice at every request — local or cloud, which
 * point, probe or not.
 */
class OffloadParityTest {
  @Test
  @SuppressWarnings("unchecked")
  void offloadChoicesMatchPython() throws Exception {
    String dir = System.getenv("PONDER_TEST_POLICY_TRACES");
    assumeTrue(dir != null, "PONDER_TEST_POLICY_TRACES is not set (pytest sets it)");
    Map<String, Object> t =
        (Map<String, Object>) Json.parse(Files.readString(Path.of(dir, "offload.trace"), StandardCharsets.UTF_8));
    List<Manifest.OperatingPoint> points = new ArrayList<>();
    for (Object p : (List<Object>) t.get("points")) {
      points.add(Manifest.OperatingPoint.fromMap((Map<String, Object>) p));
    }
    CostTable table = CostTable.fromJson(Json.canonical(t.get("table")));
    CostModel cm = new CostModel(table.stages.size(), table,
        new double[] {1, 1, 1, 1}, null, 0.2, 2.0);
    Policy local = new Policy(points, cm, PolicySpec.fromMap((Map<String, Object>) t.get("spec")));
    List<OffloadPoint> cloud = new ArrayList<>();
    for (Object c : (List<Object>) t.get("cloud")) {
      cloud.add(OffloadPoint.fromMap((Map<String, Object>) c));
    }
    double[] now = {0.0};
    OffloadPolicy policy =
        new OffloadPolicy(local, cloud, new LinkEstimate(), 2.5, 0.6, 25, 1.0, 8.0, () -> now[0]);
    int step = 0;
    int offloaded = 0;
    for (Object item : (List<Object>) t.get("events")) {
      Map<String, Object> e = (Map<String, Object>) item;
      if (e.containsKey("decide")) {
        now[0] = PolicyParityTest.num(e.get("clock"));
        Map<String, Object> s = (Map<String, Object>) e.get("decide");
        DeviceState state = new DeviceState(
            PolicyParityTest.num(s.get("battery_percent")), (Boolean) s.get("charging"),
            PolicyParityTest.num(s.get("temperature_c")), PolicyParityTest.num(s.get("speed")),
            PolicyParityTest.num(s.get("time_s")));
        OffloadDecision d = policy.decide(state);
        Map<String, Object> x = (Map<String, Object>) e.get("expect");
        String want = x.get("offload") + " " + x.get("point") + " probe=" + x.get("probe");
        String got = d.offload() + " " + d.pointName() + " probe=" + d.probe();
        assertEquals(want, got, "offload.trace request " + step + ": " + d.reason());
        offloaded += d.offload() ? 1 : 0;
        step++;
      } else if (e.containsKey("edge")) {
        List<Object> o = (List<Object>) e.get("edge");
        policy.observeEdge(PolicyParityTest.num(o.get(0)), (int) PolicyParityTest.num(o.get(1)), null);
      } else if (e.containsKey("failed")) {
        policy.failed((String) e.get("failed"));
      } else if (e.containsKey("link")) {
        List<Object> l = (List<Object>) e.get("link");
        policy.link.add(PolicyParityTest.num(l.get(0)), (long) PolicyParityTest.num(l.get(1)));
        List<Object> o = (List<Object>) e.get("offloaded");
        policy.observeOffload(PolicyParityTest.num(o.get(0)), (long) PolicyParityTest.num(o.get(1)),
            (int) PolicyParityTest.num(o.get(2)), PolicyParityTest.num(o.get(3)));
      } else {
        List<Object> o = (List<Object>) e.get("observe");
        local.observe((int) PolicyParityTest.num(o.get(0)), PolicyParityTest.num(o.get(1)), null, 1);
      }
    }
    System.out.println(step + " offload choices replayed (" + offloaded + " offloaded)");
  }
}
