package dev.ponder.demo;

import dev.ponder.core.Manifest;
import dev.ponder.core.engine.Engine;
import dev.ponder.core.offload.OffloadException;
import dev.ponder.core.policy.Policy;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.pytorch.executorch.EValue;

/**
 * A loaded bundle and what answers its requests. The bundle folder is either a device bundle
 * (manifest.json, model.pte, samples.npz) or a split bundle (split.json, edge.pte, and the
 * device bundle under local/), which can also offload.
 *
 * <p>Per request: read the device state, ask the policy for an operating point, then
 *
 * <ul>
 *   <li>the demo's offload rule: when the policy says no point is feasible on the device (its
 *       decision's {@code feasible} is false), a server URL is set, the bundle is a split bundle
 *       and the server answers /v2/health/live, the request goes to the server ("cloud"); if
 *       that call fails, the device answers at the chosen point ("fallback", with the reason);
 *   <li>otherwise the device answers at the chosen point, leaving at the first exit whose
 *       threshold the sample clears ("device exit k", or the last stage).
 * </ul>
 */
final class DemoSession implements AutoCloseable {
  static final String LOCAL = "local";

  final Path root;
  final Manifest manifest;
  final boolean split;
  private final Samples samples;
  private final ExecuTorchStages stages;
  private final Engine engine;
  private final Policy policy;
  private final List<Manifest.OperatingPoint> points;
  private SplitOffload offload;
  private int next;

  /** One request's outcome, as the UI shows it. */
  record Report(int sample, String source, int label, double ms, Device.Snapshot device,
      String point, String rule, boolean feasible, String note) {
    String line() {
      return String.format(
          "#%d %s → label %d | %.1f ms | %s | point %s, rule %s%s%s",
          sample, source, label, ms, device.describe(), point, rule,
          feasible ? "" : " (infeasible on device)", note == null ? "" : " | " + note);
    }
  }

  DemoSession(Path root, Double latencyBudgetMs) throws Exception {
    this.root = root;
    this.split = Files.isRegularFile(root.resolve(SplitOffload.SPLIT_FILE));
    Path local = split ? root.resolve(LOCAL) : root;
    manifest = Ponder.open(local);
    points = Ponder.points(manifest);
    samples = new Samples(local, Ponder.inputNames(manifest), Ponder.moeTauInput(manifest));
    if (samples.size() == 0) {
      throw new IllegalStateException(local.resolve(Samples.FILE) + " holds no samples");
    }
    stages = new ExecuTorchStages(manifest, local.resolve("model.pte").toString());
    engine = Ponder.engine(manifest);
    policy = Ponder.policy(manifest, local, latencyBudgetMs);
    warmUp();
  }

  /** Sets (or with a blank URL, clears) the ponder serve URL; needs a split bundle. */
  void offloadTo(String url, String token) throws Exception {
    if (offload != null) {
      offload.close();
      offload = null;
    }
    if (url == null || url.isBlank()) {
      return;
    }
    if (!split) {
      throw new IllegalStateException(
          "offloading needs a split bundle (ponder export --split); this is a device bundle");
    }
    offload = new SplitOffload(root, url.trim(), token);
  }

  String describe() {
    return Ponder.modelId(manifest) + ": " + Ponder.numStages(manifest) + " stages, "
        + points.size() + " operating points, " + samples.size() + " samples"
        + (split ? ", split bundle" : "")
        + (policy == null ? " (no operating points: every request runs the full model)" : "");
  }

  /**
   * One request through every stage with the policy watching, before the first real one, so
   * that the policy has measured this phone's stage times when it first decides.
   */
  private void warmUp() throws Exception {
    Manifest.OperatingPoint full = Ponder.fullModel(manifest);
    stages.start(samples.get(0), samples.defaultTau());
    Ponder.run(engine, stages, full, policy);
  }

  Report request(Device.Snapshot device) throws Exception {
    int i = next++ % samples.size();
    Manifest.OperatingPoint point;
    String rule;
    boolean feasible;
    if (policy == null) {
      point = Ponder.fullModel(manifest);
      rule = "none";
      feasible = true;
    } else {
      Ponder.Choice choice = Ponder.decide(policy, device);
      point = choice.point();
      rule = choice.rule();
      feasible = choice.feasible();
    }
    String note = null;
    if (!feasible && offload != null) {
      long start = System.nanoTime();
      if (offload.live()) {
        try {
          float[] logits = offload.logits(samples, i);
          double ms = (System.nanoTime() - start) / 1e6;
          return new Report(i, "cloud", argmax(logits), ms, device, Ponder.name(point), rule,
              false, null);
        } catch (OffloadException e) {
          note = "fallback: " + Ponder.describe(e);
        }
      } else {
        note = "fallback: the server is not live";
      }
    }
    Ponder.Answer a = local(i, point);
    String source = note != null ? "fallback, device exit " + a.exitStage() : where(a.exitStage());
    return new Report(i, source, a.label(), a.totalMs(), device, Ponder.name(point), rule,
        feasible, note);
  }

  private Ponder.Answer local(int i, Manifest.OperatingPoint point) throws Exception {
    Double tau = Ponder.moeTau(point);
    Map<String, EValue> inputs = samples.get(i);
    stages.start(inputs, tau != null ? tau : samples.defaultTau());
    return Ponder.run(engine, stages, point, policy);
  }

  private String where(int exitStage) {
    int last = Ponder.numStages(manifest) - 1;
    return exitStage < last ? "device exit " + exitStage : "device, last stage (" + last + ")";
  }

  private static int argmax(float[] v) {
    int best = 0;
    for (int k = 1; k < v.length; k++) {
      if (v[k] > v[best]) {
        best = k;
      }
    }
    return best;
  }

  @Override
  public void close() {
    stages.close();
    if (offload != null) {
      offload.close();
    }
  }
}
