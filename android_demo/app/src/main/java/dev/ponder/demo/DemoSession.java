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
 * <p>Per request: read the device state, then
 *
 * <ul>
 *   <li>with a split bundle that has offload points and a server URL: the core's OffloadPolicy
 *       (Python's, replayed in the parity tests) weighs the local policy's point against
 *       offloading at each keep × codec with its link model, and probes the link now and then;
 *       an offload runs the device half here and the rest on the server ("cloud"); when it
 *       fails, the device answers at the local point ("fallback", with the reason) and the
 *       policy backs off;
 *   <li>otherwise the core's Policy picks the operating point and the device answers, leaving at
 *       the first exit whose threshold the sample clears ("device exit k", or the last stage).
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
  private dev.ponder.core.policy.OffloadPolicy offloadPolicy; // null: offloading is off
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
      offloadPolicy = null;
    }
    if (url == null || url.isBlank()) {
      return;
    }
    if (!split) {
      throw new IllegalStateException(
          "offloading needs a split bundle (ponder export --split); this is a device bundle");
    }
    offload = new SplitOffload(root, url.trim(), token);
    offloadPolicy = Ponder.offloadPolicy(policy, offload.points, offload.client);
    if (offloadPolicy == null) {
      String why = policy == null ? "the local bundle has no operating points" : "split.json has no offload points";
      offload.close();
      offload = null;
      throw new IllegalStateException(
          "offloading needs a policy to weigh it: " + why + " (export the split bundle from a"
              + " checkpoint with labelled data: ponder export CHECKPOINT --split K)");
    }
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
    if (offloadPolicy != null) {
      return offloadOrNot(i, device);
    }
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
    Ponder.Answer a = local(i, point);
    return new Report(i, where(a.exitStage()), a.label(), a.totalMs(), device, Ponder.name(point),
        rule, feasible, null);
  }

  private Report offloadOrNot(int i, Device.Snapshot device) throws Exception {
    Ponder.OffloadChoice c = Ponder.decide(offloadPolicy, device);
    Ponder.Choice l = c.local();
    String note = null;
    if (c.offload()) {
      long start = System.nanoTime();
      try {
        float[] logits = offload.logits(samples, i, c.keep(), c.codec());
        double ms = (System.nanoTime() - start) / 1e6;
        Ponder.observeEdge(offloadPolicy, offload.edgeMs);
        Ponder.observeOffload(offloadPolicy, offload.client, (ms - offload.edgeMs) / 1e3);
        return new Report(i, c.probe() ? "cloud (probing the link)" : "cloud", argmax(logits), ms,
            device, c.name(), l.rule(), l.feasible(), null);
      } catch (OffloadException e) {
        if (offload.edgeMs >= 0) { // the device half ran: its time counts, as in Python
          Ponder.observeEdge(offloadPolicy, offload.edgeMs);
        }
        Ponder.failed(offloadPolicy, e);
        note = "fallback: " + Ponder.describe(e);
      }
    }
    Ponder.Answer a = local(i, l.point());
    String source = note != null ? "fallback, " + where(a.exitStage()) : where(a.exitStage());
    return new Report(i, source, a.label(), a.totalMs(), device, Ponder.name(l.point()), l.rule(),
        l.feasible(), note);
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
