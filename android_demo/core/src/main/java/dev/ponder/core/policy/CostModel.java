package dev.ponder.core.policy;

import dev.ponder.core.Manifest;
import java.util.Arrays;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Per-stage latency (ms) and energy (mJ) of one sample at full clock speed, a port of Python's
 * {@code ponder.runtime.CostModel}: starts from a cost table (or, without one, learns from
 * observe(): stages never observed are extrapolated from the stage FLOPs at the ms-per-FLOP of
 * the observed ones) and moves each estimate toward measurements by an EWMA (est += alpha *
 * (measured - est)). Worst-case latency adds {@code tail} times each stage's EW mean absolute
 * deviation; every latency adds the EWMAs of the request's and each step's time outside the stage
 * calls. A batch-B call counts as B one-sample calls. A stage not observed for {@link
 * #STALE_AFTER} observations is predicted from its table figure times the drift (the EWMA of
 * measured / table latency) again. Throttling (speed) scales latency only.
 */
public final class CostModel {
  static final double SPIKE = 3.0;
  static final int STALE_AFTER = 400;

  public final int numStages;
  public final CostTable table;
  public final Double powerW;
  public final double alpha;
  public final double tail;
  final double[] stageFlops; // null: none
  private final double[] dev;
  private final Double[] tableMs;
  private final double[] tableDev;
  private final int[] seenAt;
  private final Double[] latency;
  private final Double[] energy;
  private final int[] observations;
  private final List<Map<Integer, Double>> calls; // per stage: ms of a full bucket
  private final Double[] stagePowerW;
  private int count;
  double requestMs;
  double stepMs;
  double drift = 1.0;
  int version;

  /** For a bundle: its stage FLOPs (equal weights where it has none), the table if measured. */
  public static CostModel of(Manifest m, CostTable table, Double powerW) {
    double[] flops = new double[m.stages.size()];
    double sum = 0;
    for (Manifest.Stage s : m.stages) {
      flops[s.index()] = s.flops();
      sum += s.flops();
    }
    if (sum <= 0) {
      Arrays.fill(flops, 1.0);
    }
    return new CostModel(m.stages.size(), table, flops, powerW, 0.2, 2.0);
  }

  public CostModel(
      int numStages, CostTable table, double[] stageFlops, Double powerW, double alpha, double tail) {
    if (numStages < 1) {
      throw new PolicyException("numStages must be positive, got " + numStages);
    }
    if (powerW != null && !(powerW > 0)) {
      throw new PolicyException("powerW must be > 0, got " + powerW);
    }
    if (!(alpha > 0 && alpha <= 1)) {
      throw new PolicyException("alpha (EWMA weight of a new measurement) must be in (0, 1], got " + alpha);
    }
    if (table == null && stageFlops == null) {
      throw new PolicyException(
          "no stage latency is known yet: measure a cost table with `ponder profile BUNDLE` and"
              + " pass it, or pass the manifest's stage FLOPs and observe() a stage time first");
    }
    if (!(tail >= 0)) {
      throw new PolicyException("tail (deviations added for worst-case latency) must be >= 0, got " + tail);
    }
    this.numStages = numStages;
    this.table = table;
    this.powerW = powerW;
    this.alpha = alpha;
    this.tail = tail;
    this.dev = new double[numStages];
    this.tableMs = new Double[numStages];
    this.tableDev = new double[numStages];
    this.seenAt = new int[numStages];
    if (stageFlops != null) {
      double sum = 0;
      boolean bad = stageFlops.length != numStages;
      for (double f : stageFlops) {
        bad |= !(f >= 0);
        sum += f;
      }
      if (bad || sum <= 0) {
        throw new PolicyException(
            "stage FLOPs must hold " + numStages + " non-negative counts (not all zero), got "
                + Arrays.toString(stageFlops));
      }
      this.stageFlops = stageFlops.clone();
    } else {
      this.stageFlops = null;
    }
    this.latency = new Double[numStages];
    this.energy = new Double[numStages];
    this.observations = new int[numStages];
    this.calls = new ArrayList<>();
    for (int k = 0; k < numStages; k++) {
      calls.add(new LinkedHashMap<>()); // insertion order: ties resolve as in Python's dict
    }
    this.stagePowerW = new Double[numStages];
    if (table != null) {
      if (table.stages.size() != numStages || table.batch < 1) {
        throw new PolicyException(
            "cost table has " + table.stages.size() + " stages at batch " + table.batch + " for a "
                + numStages + "-stage bundle; measure it again with `ponder profile BUNDLE`");
      }
      for (int k = 0; k < numStages; k++) {
        CostTable.StageCost s = table.stages.get(k);
        latency[k] = tableMs[k] = s.latencyMs() / table.batch;
        dev[k] = tableDev[k] = Math.max(s.latencyP90Ms() - s.latencyMs(), 0.0) / table.batch;
        energy[k] = s.energyMj() == null ? null : s.energyMj() / table.batch;
      }
      for (CostTable.StageCost s : table.stages) {
        calls.get(s.index()).put(bucket(table.batch), s.latencyMs());
        if (s.energyMj() != null && s.latencyMs() > 0) {
          stagePowerW[s.index()] = s.energyMj() / s.latencyMs();
        }
      }
    }
  }

  /** Bumped by every observation: a policy caches what it derives per version. */
  public int version() {
    return version;
  }

  /** Whether every stage has a latency estimate (a table, or FLOPs and one observation). */
  public boolean known() {
    return allKnown(latency) || (stageFlops != null && msPerFlop() != null);
  }

  /** Whether every stage has an energy estimate (measured, or latency × powerW). */
  public boolean hasEnergy() {
    return powerW != null || allKnown(energy);
  }

  private static boolean allKnown(Double[] values) {
    for (Double v : values) {
      if (v == null) {
        return false;
      }
    }
    return true;
  }

  private Double msPerFlop() {
    double ms = 0;
    double flops = 0;
    for (int k = 0; k < numStages; k++) {
      if (latency[k] != null) {
        ms += latency[k];
        flops += stageFlops[k];
      }
    }
    return flops > 0 ? ms / flops : null;
  }

  /** Latency of each stage for one sample at full speed; PolicyException when unknown. */
  public double[] stageLatencyMs() {
    double[] out = new double[numStages];
    if (allKnown(latency)) {
      for (int k = 0; k < numStages; k++) {
        out[k] = stale(k) ? tableMs[k] * drift : latency[k];
      }
      return out;
    }
    Double rate = stageFlops != null ? msPerFlop() : null;
    if (rate == null) {
      throw new PolicyException("no stage latency is known yet: pass a cost table or observe() a stage");
    }
    for (int k = 0; k < numStages; k++) {
      out[k] = latency[k] != null ? latency[k] : stageFlops[k] * rate;
    }
    return out;
  }

  /** Energy of each stage for one sample (measured, else latency × powerW), or null. */
  public double[] stageEnergyMj(double[] lat) {
    double[] out = new double[numStages];
    if (allKnown(energy)) {
      for (int k = 0; k < numStages; k++) {
        out[k] = energy[k];
      }
      return out;
    }
    if (powerW == null) {
      return null;
    }
    for (int k = 0; k < numStages; k++) {
      out[k] = energy[k] != null ? energy[k] : lat[k] * powerW;
    }
    return out;
  }

  /** Per-stage latency with the engine's per-step time added. */
  double[] stepped(double[] lat) {
    if (stepMs == 0) {
      return lat;
    }
    double[] out = new double[lat.length];
    for (int k = 0; k < lat.length; k++) {
      out[k] = lat[k] + stepMs;
    }
    return out;
  }

  /** Per-stage latency for worst-case budgets: estimate + tail × EW mean absolute deviation. */
  double[] stageTailMs(double[] lat) {
    double[] out = new double[numStages];
    for (int k = 0; k < numStages; k++) {
      double d = stale(k) ? dev[k] * drift : dev[k];
      out[k] = lat[k] + tail * d;
    }
    return out;
  }

  private boolean stale(int k) {
    if (tableMs[k] == null) {
      return false;
    }
    return observations[k] == 0 || count - seenAt[k] > STALE_AFTER;
  }

  private double ewma(Double old, double value) {
    return old == null ? value : old + alpha * (value - old);
  }

  /** Folds one measured call of {@code stage} (batch rows, at clock speed) into the EWMA. */
  public void observe(int stage, double latencyMs, Double energyMj, int batch, double speed) {
    if (stage < 0 || stage >= numStages) {
      throw new PolicyException(
          "stage " + stage + " is out of range: this bundle has stages 0.." + (numStages - 1));
    }
    if (!(latencyMs >= 0 && batch >= 1 && speed > 0) || Double.isInfinite(latencyMs)) {
      throw new PolicyException(
          "observe() needs latency_ms >= 0 (finite), batch >= 1 and speed > 0; got " + latencyMs
              + ", " + batch + ", " + speed);
    }
    double per = latencyMs * speed / batch;
    if (stale(stage)) {
      latency[stage] = tableMs[stage] * drift;
      dev[stage] = tableDev[stage] * drift;
    }
    Double old = latency[stage];
    if (old != null) {
      per = Math.min(per, SPIKE * old);
      dev[stage] += alpha * (Math.abs(per - old) - dev[stage]);
    }
    if (tableMs[stage] != null && tableMs[stage] != 0.0) {
      drift += alpha * (per / tableMs[stage] - drift);
    }
    latency[stage] = ewma(old, per);
    int b = bucket(batch);
    calls.get(stage).put(b, ewma(calls.get(stage).get(b), latencyMs * speed * b / batch));
    count += 1;
    seenAt[stage] = count;
    if (energyMj != null) {
      energy[stage] = ewma(energy[stage], energyMj / batch);
    }
    observations[stage] += 1;
    version += 1;
  }

  /** Folds one request's time outside its stage steps (and, if given, per step) into the EWMAs. */
  public void observeRequest(double overheadMs, Double stepOverheadMs) {
    double step = stepOverheadMs == null ? 0.0 : stepOverheadMs;
    if (!(overheadMs >= 0) || Double.isInfinite(overheadMs) || !(step >= 0) || Double.isInfinite(step)) {
      throw new PolicyException("observeRequest() needs overheads >= 0 ms, got " + overheadMs + ", " + step);
    }
    requestMs += alpha * (overheadMs - requestMs);
    if (stepOverheadMs != null) {
      stepMs += alpha * (stepOverheadMs - stepMs);
    }
    version += 1;
  }

  /**
   * Expected ms of one step of {@code stage} on {@code rows} rows at clock {@code speed}: the
   * nearest measured batch bucket scaled rows to rows, plus the per-step time; 0 when unknown.
   */
  public double callMs(int stage, int rows, double speed) {
    Map<Integer, Double> known = calls.get(stage);
    if (known.isEmpty()) {
      return 0.0;
    }
    int b = bucket(rows);
    int near = b;
    if (!known.containsKey(b)) {
      double best = Double.POSITIVE_INFINITY;
      for (int x : known.keySet()) { // the first of equals, as Python's min()
        double d = Math.abs(log2(x) - log2(b));
        if (d < best) {
          best = d;
          near = x;
        }
      }
    }
    return known.get(near) * rows / near / speed + stepMs;
  }

  /** The expected cost of one request at {@code point} under clock {@code speed}. */
  public Prediction predict(Manifest.OperatingPoint point, double speed, double quantile) {
    ExitDistribution dist = ExitDistribution.of(point, numStages);
    double[] lat = stageLatencyMs();
    double[] en = stageEnergyMj(lat);
    Double flops = point.flopsFraction();
    if (flops == null && stageFlops != null) {
      double sum = 0;
      for (double f : stageFlops) {
        sum += f;
      }
      flops = dist.expected(stageFlops) / sum;
    }
    double[] tailMs = stepped(stageTailMs(lat));
    return new Prediction(
        point.accuracy(),
        dist.expected(stepped(lat)) / speed + requestMs,
        dist.costToQuantile(tailMs, quantile) / speed + requestMs,
        en == null ? null : dist.expected(en),
        flops);
  }

  private static double log2(int x) {
    return Math.log(x) / Math.log(2);
  }

  static int bucket(int rows) {
    int r = Math.max(rows, 1) - 1;
    return r == 0 ? 1 : Integer.highestOneBit(r) << 1;
  }
}
