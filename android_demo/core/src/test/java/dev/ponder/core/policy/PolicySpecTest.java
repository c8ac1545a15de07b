package dev.ponder.core.policy;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

/** Policy files the core must refuse, with a message that says what to fix. */
class PolicySpecTest {
  @Test
  void badPolicyFilesAreRefusedByName() {
    String[][] cases = {
      {"{\"default\": {\"latency\": 20}}", "unknown key 'latency'"},
      {"{\"rule\": [{\"name\": \"x\", \"latency_ms\": 5}]}", "has no `when` conditions"},
      {"{\"rule\": [{\"name\": \"x\", \"when\": {\"battery_above\": 60, \"battery_below\": 40}}]}",
        "never both hold"},
      {"{\"latency_quantile\": 0}", "latency_quantile must be in (0, 1]"},
      {"{\"pacing\": {\"battery_percent\": 3}}", "battery_wh"},
      {"{\"default\": {\"energy_fraction\": 1.5}}", "energy_fraction = 1.5 is outside"},
      {"{\"format\": \"other\"}", "not a ponder policy"},
      {"[1, 2]", "must be a table"},
    };
    for (String[] c : cases) {
      PolicyException e = assertThrows(PolicyException.class, () -> PolicySpec.fromJson(c[0]), c[0]);
      assertTrue(e.getMessage().contains(c[1]), c[0] + " -> " + e.getMessage());
    }
    PolicySpec ok = PolicySpec.fromJson("{\"default\": {\"latency_ms\": 20}, \"hysteresis\": {\"min_requests\": 2}}");
    assertEquals(20.0, ok.defaultRule.latencyMs());
    assertEquals(2, ok.minRequests);
  }
}
