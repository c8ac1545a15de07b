package dev.ponder.core.policy;

import dev.ponder.core.Manifest;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;

/**
 * The policy engine, a port of Python's {@code ponder.runtime.Policy} that makes the same
 * decisions (the parity tests replay decision traces Python wrote): from the device state and
 * the policy's budgets, pick the operating point that maximises expected accuracy — or, under an
 * accuracy floor, costs least — with hysteresis (bands on battery and temperature edges, margins
 * before a switch, a dwell of minRequests) and energy pacing. Call decide(state) before a request
 * and observe() after each stage call.
 */
public final class Policy {
  private static final double INF = Double.POSITIVE_INFINITY;

  public final List<Manifest.OperatingPoint> points;
  public final CostModel costModel;
  public final PolicySpec spec;
  public final Pacer pacer; // null without [pacing]
  private final List<PolicyRule> rules; // the default last
  private final int numStages;
  private final double[][] reach; // [P][S]
  private final boolean[][] worst; // [P][S]: stages up to the latency quantile stage
  private final double[] acc; // -inf where unknown
  private final Integer[] byAccuracy;
  private final Double[] flops;
  private Integer current;
  private int active;
  private int since;
  private double speed = 1.0;
  private Snapshot snap;
  private Key key;
  private Decision cached;

  public Policy(List<Manifest.OperatingPoint> points, CostModel costModel, PolicySpec spec) {
    if (points == null || points.isEmpty()) {
      throw new PolicyException("a Policy needs at least one operating point (the manifest's)");
    }
    this.points = List.copyOf(points);
    this.costModel = costModel;
    this.spec = spec == null ? PolicySpec.simple(null, null) : spec;
    if (this.spec.needsEnergy() && !costModel.hasEnergy()) {
      throw new PolicyException(
          "the policy caps energy, but the cost model has no energy figures: profile on a device"
              + " with an energy probe (`ponder profile BUNDLE`), or give the cost model powerW");
    }
    numStages = costModel.numStages;
    int m = this.points.size();
    reach = new double[m][];
    worst = new boolean[m][numStages];
    acc = new double[m];
    for (int i = 0; i < m; i++) {
      Manifest.OperatingPoint p = this.points.get(i);
      ExitDistribution d = ExitDistribution.of(p, numStages);
      reach[i] = d.reach();
      int last = d.quantileStage(this.spec.latencyQuantile);
      for (int k = 0; k <= last; k++) {
        worst[i][k] = true;
      }
      acc[i] = p.accuracy() == null ? -INF : p.accuracy();
    }
    byAccuracy = new Integer[m];
    for (int i = 0; i < m; i++) {
      byAccuracy[i] = i;
    }
    java.util.Arrays.sort(byAccuracy, Comparator.comparingDouble(i -> -acc[i])); // stable
    flops = new Double[m];
    double[] sf = costModel.stageFlops;
    double total = 0;
    if (sf != null) {
      for (double f : sf) {
        total += f;
      }
    }
    for (int i = 0; i < m; i++) {
      Double given = this.points.get(i).flopsFraction();
      flops[i] = given != null || sf == null ? given : dot(reach[i], sf) / total;
    }
    rules = new ArrayList<>(this.spec.rules);
    rules.add(this.spec.defaultRule);
    active = rules.size() - 1;
    pacer = this.spec.pacing == null ? null : new Pacer(this.spec.pacing);
  }

  /** The point of the last decision (null before the first). */
  public Manifest.OperatingPoint current() {
    return current == null ? null : points.get(current);
  }

  /** Feeds one measured stage call (at the last decision's clock speed) to the cost model. */
  public void observe(int stage, double latencyMs, Double energyMj, int batch) {
    costModel.observe(stage, latencyMs, energyMj, batch, speed);
    if (pacer != null) {
      double spent = energyMj == null ? estimateMj(stage, batch) : energyMj;
      pacer.spend(spent, stage == 0 ? batch : 0);
    }
  }

  /** Charges energy spent outside observe() (an offloaded request's radio time) to pacing. */
  public void spend(double energyMj, double requests) {
    if (pacer != null) {
      pacer.spend(energyMj, requests);
    }
  }

  private double estimateMj(int stage, int batch) {
    double[] lat;
    try {
      lat = costModel.stageLatencyMs();
    } catch (PolicyException e) {
      return 0.0; // other stages' costs are not known yet
    }
    double[] perRow = costModel.stageEnergyMj(lat);
    return perRow == null ? 0.0 : perRow[stage] * batch;
  }

  /** The operating point for the next request(s) under {@code state} (null: nothing known). */
  public Decision decide(DeviceState state) {
    if (state == null) {
      state = DeviceState.unknown();
    }
    if (!(state.speed() > 0)) {
      throw new PolicyException("DeviceState.speed must be > 0 (1.0 = full clock), got " + state.speed());
    }
    speed = state.speed();
    double cap = INF;
    if (pacer != null) {
      pacer.tick(state.timeS(), state.charging());
      cap = Pacer.roundDown(pacer.allowanceMj());
    }
    boolean dwellOk = since >= spec.minRequests;
    Key k = new Key(state, costModel.version(), current, active, dwellOk, cap);
    if (k.same(key)) { // nothing the choice depends on has changed
      since += 1;
      return cached;
    }
    return decide(state, dwellOk, cap);
  }

  private Snapshot snapshot() {
    if (snap == null || snap.version != costModel.version()) {
      snap = new Snapshot(costModel, reach, worst, acc);
    }
    return snap;
  }

  private int match(DeviceState state) {
    for (int i = 0; i < rules.size() - 1; i++) {
      boolean band = i == active;
      if (rules.get(i).holds(
          state.batteryPercent(),
          state.charging(),
          state.temperatureC(),
          band ? spec.batteryBand : 0.0,
          band ? spec.temperatureBand : 0.0)) {
        return i;
      }
    }
    return rules.size() - 1;
  }

  private Decision decide(DeviceState state, boolean dwellOk, double cap) {
    Snapshot s = snapshot();
    Integer previous = current;
    int ri = match(state);
    active = ri;
    PolicyRule rule = rules.get(ri);
    double[] limits = {
      rule.latencyMs() == null ? INF : rule.latencyMs() * state.speed(),
      Math.min(rule.energyLimit(s.fullEn), cap),
      rule.minAccuracy() == null ? -INF : rule.minAccuracy()
    };
    int best;
    boolean feasible;
    String how;
    if (!s.known && (limits[0] < INF || limits[1] < INF)) {
      best = s.cheapest();
      feasible = false;
      how = "unknown";
    } else {
      int[] found = best(s, limits);
      best = found[0];
      feasible = found[1] == 1;
      how = HOW[found[2]];
    }
    int chosen = best;
    String kept = null;
    if (previous != null && previous != best && !how.equals("unknown") && s.meets(previous, limits)) {
      boolean small;
      if (how.equals("cost")) {
        double gain = s.cost[previous] - s.cost[best];
        small = !(gain > spec.costMargin * s.cost[previous]);
      } else {
        small = !(acc[best] - acc[previous] > spec.accuracyMargin);
      }
      if (small) {
        chosen = previous;
        kept = "margin";
      } else if (!dwellOk) {
        chosen = previous;
        kept = "dwell";
      }
    }
    boolean changed = previous == null || chosen != previous;
    current = chosen;
    since = changed ? 1 : since + 1;
    Decision d =
        new Decision(
            points.get(chosen), chosen, rule.name(), feasible, changed, how, kept, best, limits,
            predict(s, chosen, state.speed()),
            rule,
            new Decision.Costs(s.known, s.hasEnergy, s.cost[chosen], s.meanLat[chosen]));
    boolean dwell = since >= spec.minRequests;
    key = new Key(state, s.version, chosen, ri, dwell, cap);
    cached = changed ? d.unchanged() : d;
    return d;
  }

  private static final String[] HOW = {"accuracy", "cost", "floor", "cheapest"};

  /** {index, feasible (1/0), how (index into HOW)}. */
  private int[] best(Snapshot s, double[] limits) {
    double latLim = limits[0];
    double enLim = limits[1];
    double floor = limits[2];
    if (floor > -INF) {
      for (int i : s.byCost()) {
        if (s.meets(i, limits)) {
          return new int[] {i, 1, 1};
        }
      }
    }
    Integer best = null;
    for (int i : byAccuracy) { // most accurate first; among equals, the cheaper
      if (best != null && acc[i] != acc[best]) {
        break;
      }
      boolean cheaper =
          best == null
              || s.meanLat[i] < s.meanLat[best]
              || (s.meanLat[i] == s.meanLat[best] && s.meanEn[i] < s.meanEn[best]);
      if (s.worstLat[i] <= latLim && s.meanEn[i] <= enLim && cheaper) {
        best = i;
      }
    }
    if (best != null) {
      return new int[] {best, floor == -INF ? 1 : 0, floor == -INF ? 0 : 2};
    }
    return new int[] {s.cheapest(), 0, 3};
  }

  private Prediction predict(Snapshot s, int i, double speed) {
    Manifest.OperatingPoint p = points.get(i);
    return new Prediction(
        p.accuracy(),
        s.known ? s.meanLat[i] / speed : Double.NaN,
        s.known ? s.worstLat[i] / speed : Double.NaN,
        s.hasEnergy ? s.meanEn[i] : null,
        flops[i]);
  }

  static double dot(double[] a, double[] b) {
    double sum = 0.0;
    for (int k = 0; k < a.length; k++) {
      sum += a[k] * b[k];
    }
    return sum;
  }

  /** Everything a decision depends on: equal keys, equal decisions (compared as Python's ==). */
  private record Key(
      Double battery, Boolean charging, Double temperature, double speed, int version,
      Integer current, int rule, boolean dwell, double cap) {
    Key(DeviceState s, int version, Integer current, int rule, boolean dwell, double cap) {
      this(s.batteryPercent(), s.charging(), s.temperatureC(), s.speed(), version, current, rule, dwell, cap);
    }

    boolean same(Key o) {
      return o != null
          && eq(battery, o.battery)
          && java.util.Objects.equals(charging, o.charging)
          && eq(temperature, o.temperature)
          && speed == o.speed
          && version == o.version
          && java.util.Objects.equals(current, o.current)
          && rule == o.rule
          && dwell == o.dwell
          && cap == o.cap;
    }

    private static boolean eq(Double a, Double b) {
      return a == null ? b == null : b != null && a.doubleValue() == b.doubleValue();
    }
  }
}
