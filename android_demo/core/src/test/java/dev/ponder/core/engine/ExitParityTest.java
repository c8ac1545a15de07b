package dev.ponder.core.engine;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import dev.ponder.core.Json;
import dev.ponder.core.Manifest;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * Replays the exit trace Python wrote ({@code PONDER_TEST_EXIT_TRACE}, see
 * tests/android/test_java_policy.py): the stage outputs a real bundle gave on ONNX Runtime, the
 * score every exit rule gave them, and where Python's Engine let each sample leave at several
 * operating points. The Java rules must score the same and the Java Engine must let every sample
 * leave at the same stage with the same answer.
 */
class ExitParityTest {
  static Map<String, Object> trace;
  static float[][][] values; // [stage][sample][class]

  @BeforeAll
  @SuppressWarnings("unchecked")
  static void read() throws Exception {
    String path = System.getenv("PONDER_TEST_EXIT_TRACE");
    assumeTrue(path != null, "PONDER_TEST_EXIT_TRACE is not set (pytest sets it)");
    trace = (Map<String, Object>) Json.parse(Files.readString(Path.of(path), StandardCharsets.UTF_8));
    List<Object> stages = (List<Object>) trace.get("values");
    values = new float[stages.size()][][];
    for (int k = 0; k < values.length; k++) {
      List<Object> rows = (List<Object>) stages.get(k);
      values[k] = new float[rows.size()][];
      for (int n = 0; n < rows.size(); n++) {
        List<Object> row = (List<Object>) rows.get(n);
        values[k][n] = new float[row.size()];
        for (int c = 0; c < row.size(); c++) {
          values[k][n][c] = (float) ((Json.Number) row.get(c)).value();
        }
      }
    }
  }

  @Test
  @SuppressWarnings("unchecked")
  void everyRuleScoresAsPython() {
    Map<String, Object> scores = (Map<String, Object>) trace.get("scores");
    assertEquals(5, scores.size());
    int checked = 0;
    for (Map.Entry<String, Object> e : scores.entrySet()) {
      List<Object> perExit = (List<Object>) e.getValue();
      for (int n = 0; n < values[0].length; n++) {
        ExitRule rule = ExitRule.of(e.getKey(), false);
        for (int k = 0; k < perExit.size(); k++) {
          double want = ((Json.Number) ((List<Object>) perExit.get(k)).get(n)).value();
          double got = rule.step(values[k][n]);
          assertTrue(
              Math.abs(got - want) <= 1e-12,
              e.getKey() + " sample " + n + " exit " + k + ": Python " + want + ", Java " + got);
          checked++;
        }
      }
    }
    System.out.println(checked + " exit scores equal to Python's");
  }

  @Test
  @SuppressWarnings("unchecked")
  void theEngineLeavesWherePythonsDid() throws Exception {
    Manifest m = Manifest.open(Path.of((String) trace.get("bundle")), true);
    Engine engine = new Engine(m);
    int samples = 0;
    for (Object item : (List<Object>) trace.get("runs")) {
      Map<String, Object> run = (Map<String, Object>) item;
      Manifest.OperatingPoint point = Manifest.OperatingPoint.fromMap((Map<String, Object>) run.get("point"));
      List<Object> stages = (List<Object>) run.get("exit_stage");
      List<Object> labels = (List<Object>) run.get("prediction");
      int[] left = new int[m.stages.size()];
      for (int n = 0; n < stages.size(); n++) {
        final int sample = n;
        Engine.Result r = engine.run(k -> values[k][sample], point, null);
        String where = point.name() + " sample " + n;
        assertEquals(((Json.Number) stages.get(n)).longValue(), r.exitStage(), where + ": exit stage");
        assertEquals(((Json.Number) labels.get(n)).longValue(), r.label(), where + ": answer");
        left[r.exitStage()]++;
        samples++;
      }
      System.out.println(point.name() + ": samples per exit " + java.util.Arrays.toString(left));
    }
    System.out.println(samples + " engine runs leave where Python's did");
  }
}
