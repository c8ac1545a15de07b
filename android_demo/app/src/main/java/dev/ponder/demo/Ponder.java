package dev.ponder.demo;

import dev.ponder.core.BundleException;
import dev.ponder.core.Json;
import dev.ponder.core.Manifest;
import dev.ponder.core.Npz;
import dev.ponder.core.engine.Engine;
import dev.ponder.core.engine.StageRunner;
import dev.ponder.core.offload.OffloadClient;
import dev.ponder.core.offload.OffloadException;
import dev.ponder.core.offload.Payloads;
import dev.ponder.core.policy.CostModel;
import dev.ponder.core.policy.CostTable;
import dev.ponder.core.policy.Decision;
import dev.ponder.core.policy.DeviceState;
import dev.ponder.core.policy.OffloadDecision;
import dev.ponder.core.policy.OffloadPoint;
import dev.ponder.core.policy.OffloadPolicy;
import dev.ponder.core.policy.Policy;
import dev.ponder.core.policy.PolicySpec;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Map;

/**
 * Every call the app makes into the ponder core (dev.ponder.core), in one file: the rest of the
 * app holds core objects only as handles and reads them through these methods, so a change to
 * the core's API is a change here. Everything that decides (exit rules, the policy, the offload
 * protocol) is in the core; the app feeds it tensors, device state and a server URL.
 */
final class Ponder {
  private Ponder() {}

  /**
   * The cost table the app asks the bundle for: {@code costs.android.json} beside the manifest,
   * when one was measured on the phone. Tables measured on a desktop (costs.executorch.json)
   * would not predict the phone's stage times, so they are not used; without a table the
   * policy starts from the FLOPs and learns the stage times the Engine reports.
   */
  static final String COST_BACKEND = "android";

  /** The bundle's own policy file, used when present; else a latency budget from the UI. */
  static final String POLICY_FILE = "policy.json";

  // ---- the bundle

  static Manifest open(Path root) throws BundleException {
    return Manifest.open(root, true);
  }

  static String modelId(Manifest m) {
    return m.modelId;
  }

  static int numStages(Manifest m) {
    return m.stages.size();
  }

  static String method(Manifest m, int stage) {
    return m.stages.get(stage).method();
  }

  static List<String> stageInputs(Manifest m, int stage) {
    return m.stages.get(stage).inputs();
  }

  static List<String> stageOutputs(Manifest m, int stage) {
    return m.stages.get(stage).outputs();
  }

  /** The stage's exit output (log-probs), or null for the last stage. */
  static String exitOutput(Manifest m, int stage) {
    return m.stages.get(stage).exitOutput();
  }

  static List<String> inputNames(Manifest m) {
    return m.inputNames();
  }

  /** The stage input that carries the MoE gate's tau, or null when the model has none. */
  static String moeTauInput(Manifest m) {
    return m.moeTauInput();
  }

  static List<Manifest.OperatingPoint> points(Manifest m) {
    return m.operatingPoints;
  }

  /**
   * A point that lets no sample leave early (every threshold +inf): what the app runs with a
   * bundle that was exported without operating points.
   */
  static Manifest.OperatingPoint fullModel(Manifest m) {
    List<Double> never =
        Collections.nCopies(Math.max(0, m.stages.size() - 1), Double.POSITIVE_INFINITY);
    return new Manifest.OperatingPoint(
        "full model", never, null, null, null, 1.0, List.of());
  }

  static String name(Manifest.OperatingPoint p) {
    return p.name();
  }

  static Double moeTau(Manifest.OperatingPoint p) {
    return p.moeTau();
  }

  // ---- samples and JSON

  static Map<String, Npz.Array> readNpz(Path file) throws IOException {
    return Npz.read(file);
  }

  static Object parseJson(String text) {
    return Json.parse(text);
  }

  // ---- the policy

  /**
   * The policy over the bundle's operating points: the bundle's policy.json when it has one,
   * else one rule with the latency budget (ms, null: none); null when the bundle has no
   * operating points to choose among.
   */
  static Policy policy(Manifest m, Path root, Double latencyBudgetMs) throws Exception {
    if (m.operatingPoints.isEmpty()) {
      return null;
    }
    Path file = root.resolve(POLICY_FILE);
    PolicySpec spec =
        Files.isRegularFile(file) ? PolicySpec.load(file) : PolicySpec.simple(latencyBudgetMs, null);
    CostTable table = CostTable.forBackend(root, COST_BACKEND);
    return new Policy(new ArrayList<>(m.operatingPoints), CostModel.of(m, table, null), spec);
  }

  /** What the policy chose, in the app's terms. */
  record Choice(Manifest.OperatingPoint point, String rule, boolean feasible, String how) {}

  static DeviceState state(Device.Snapshot s) {
    return new DeviceState(s.batteryPercent(), s.charging(), s.temperatureC(), s.speed(), s.timeS());
  }

  static Choice decide(Policy policy, Device.Snapshot s) {
    Decision d = policy.decide(state(s));
    return new Choice(d.point(), d.ruleName(), d.feasible(), d.how());
  }

  // ---- the engine

  /** One request's local answer, in the app's terms. */
  record Answer(int exitStage, int label, double score, double totalMs) {}

  static Engine engine(Manifest m) {
    return new Engine(m);
  }

  static Answer run(Engine engine, StageRunner runner, Manifest.OperatingPoint point, Policy policy)
      throws Exception {
    Engine.Result r = engine.run(runner, point, policy);
    return new Answer(r.exitStage(), r.label(), r.score(), r.totalMs());
  }

  // ---- offloading to ponder serve

  static OffloadClient offloadClient(String url, String model, String token) {
    return new OffloadClient(url, model, token, 1000, 5000);
  }

  /** The split bundle's offload points (split.json's offload_points), empty when it has none. */
  static List<OffloadPoint> offloadPoints(Object listed) {
    List<OffloadPoint> out = new ArrayList<>();
    if (listed instanceof List<?> items) {
      for (Object item : items) {
        if (item instanceof Map<?, ?> m) {
          Map<String, Object> d = new java.util.LinkedHashMap<>();
          m.forEach((k, v) -> d.put(String.valueOf(k), v));
          out.add(OffloadPoint.fromMap(d));
        }
      }
    }
    return out;
  }

  /**
   * Python's OffloadPolicy over the local policy and the split's offload points, on the
   * client's own link estimate; null when there is nothing to weigh (no local policy or no
   * offload points: then offloading is off).
   */
  static OffloadPolicy offloadPolicy(Policy local, List<OffloadPoint> points, OffloadClient client) {
    if (local == null || points.isEmpty()) {
      return null;
    }
    return new OffloadPolicy(local, points, client.link());
  }

  /** Where the offload policy sends the next request, in the app's terms. */
  record OffloadChoice(boolean offload, boolean probe, double keep, String codec, String name,
      Choice local, String reason) {}

  static OffloadChoice decide(OffloadPolicy policy, Device.Snapshot s) {
    OffloadDecision d = policy.decide(state(s));
    Decision l = d.local();
    Choice local = new Choice(l.point(), l.ruleName(), l.feasible(), l.how());
    OffloadPoint p = d.cloudPoint();
    return new OffloadChoice(d.offload(), d.probe(), p == null ? 1.0 : p.keep(),
        p == null ? null : p.codec(), d.pointName(), local, d.reason());
  }

  /** One payload per sample from the device half's outputs, as SplitBundle.send makes them. */
  static List<byte[]> payloads(float[] hidden, float[] scores, long[] mask, int tokens, int width,
      double keep, String codec, String anchor, Map<String, Object> splitParams) {
    return Payloads.send(hidden, scores, mask, 1, tokens, width, keep, codec, anchor, splitParams);
  }

  static float[] inferPayloads(OffloadClient client, List<byte[]> payloads,
      Map<String, Object> splitParams, double keep, String codec) throws OffloadException {
    return client.inferPayloads(payloads, Payloads.params(splitParams, keep, codec))[0];
  }

  static void observeEdge(OffloadPolicy policy, double ms) {
    policy.observeEdge(ms, 1, null);
  }

  static void observeOffload(OffloadPolicy policy, OffloadClient client, double seconds) {
    policy.observeOffload(client.lastServerMillis(), client.lastAnswerBytes(), 1, seconds);
  }

  static void failed(OffloadPolicy policy, OffloadException e) {
    policy.failed(describe(e));
  }

  static String describe(OffloadException e) {
    Integer status = e.status();
    return e.kind() + (status == null ? "" : " " + status) + ": " + e.getMessage();
  }
}
