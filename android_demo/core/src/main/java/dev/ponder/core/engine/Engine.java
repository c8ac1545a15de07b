package dev.ponder.core.engine;

import dev.ponder.core.Manifest;
import dev.ponder.core.policy.Policy;

/**
 * Runs a bundle's stages for one sample with per-sample exits, as Python's Engine does for each
 * row: at stage k < the point's last stage with an exit, the exit rule scores the exit's
 * log-probabilities and the sample leaves when the score is at least the point's threshold; at
 * the last stage it leaves in any case. Each stage's wall time goes to the policy (when given),
 * which learns the device's costs from it.
 */
public final class Engine {
  public final Manifest manifest;
  private final boolean[] exitOutput; // per stage: it outputs exit log-probs (else logits)

  /** What one request did: where it left, the class it answers, its score there, the times. */
  public record Result(int exitStage, int label, double score, double[] stageMs, double totalMs) {}

  public Engine(Manifest manifest) {
    this.manifest = manifest;
    ExitRule.of(manifest.exitRule, manifest.ensembled); // refuses an unknown rule now, not later
    exitOutput = new boolean[manifest.stages.size()];
    for (Manifest.Stage s : manifest.stages) {
      exitOutput[s.index()] = s.exitOutput() != null;
    }
  }

  /** Runs {@code runner} at {@code point}; {@code policy} (nullable) observes every stage time. */
  public Result run(StageRunner runner, Manifest.OperatingPoint point, Policy policy)
      throws Exception {
    int n = manifest.stages.size();
    int last = point.lastStage(n);
    ExitRule rule = ExitRule.of(manifest.exitRule, manifest.ensembled);
    double[] ms = new double[last + 1];
    long started = System.nanoTime();
    for (int k = 0; k <= last; k++) {
      Manifest.Stage stage = manifest.stages.get(k);
      long t0 = System.nanoTime();
      float[] out = runner.run(k);
      ms[k] = (System.nanoTime() - t0) / 1e6;
      boolean fin = k == last || !stage.exit();
      double threshold = fin ? Double.POSITIVE_INFINITY : point.thresholds().get(k);
      if (!fin && threshold == Double.POSITIVE_INFINITY && rule.stateless()) {
        observe(policy, k, ms[k]);
        continue; // nobody may leave here and the rule keeps no state: no score needed
      }
      float[] logp = exitOutput[k] ? out : logSoftmax32(out);
      double score = fin && rule.stateless() ? Double.NaN : rule.step(logp);
      double[] answer = fin && rule.stateless() ? ExitRule.widen(logp) : rule.predicted();
      observe(policy, k, ms[k]);
      if (fin || score >= threshold) {
        double[] taken = java.util.Arrays.copyOf(ms, k + 1);
        return new Result(k, ExitRule.argmax(answer), score, taken, (System.nanoTime() - started) / 1e6);
      }
    }
    throw new IllegalStateException("unreachable: the last stage always answers");
  }

  private static void observe(Policy policy, int stage, double ms) {
    if (policy != null) {
      policy.observe(stage, ms, null, 1);
    }
  }

  /** Log-probabilities of logits in float32, as Python's engine computes them at the last stage. */
  static float[] logSoftmax32(float[] x) {
    double[] lsm = ExitRule.logSoftmax(ExitRule.widen(x));
    float[] out = new float[x.length];
    for (int c = 0; c < x.length; c++) {
      out[c] = (float) lsm[c];
    }
    return out;
  }
}
