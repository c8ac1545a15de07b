package dev.ponder.core.policy;

import dev.ponder.core.offload.LinkEstimate;
import java.util.ArrayList;
import java.util.List;
import java.util.function.DoubleSupplier;

/**
 * Local or cloud, request by request — a port of Python's {@code OffloadPolicy} that makes the
 * same choices (the parity tests replay traces Python wrote). Offload points (keep × codec with
 * accuracy and payload bytes) are weighed against the local policy's choice with the link model:
 *
 * <pre>
 * latency = device half (EWMA of its measured time, slowed by throttling)
 *           + link (RTT + bytes / bandwidth, from the client's transfers) + server compute
 * energy  = device half × device power + radio power × (link + server time)
 * </pre>
 *
 * The budgets and the criterion are the local policy's; offloading must win by more than its
 * margins to replace the local point. The link is explored while unmeasured or unused for
 * {@code probeEvery} requests; a failed offload backs off (doubling, up to maxBackoffS).
 */
public final class OffloadPolicy {
  static final double ANSWER_BYTES = 300;

  public final Policy local;
  public final List<OffloadPoint> points;
  public final LinkEstimate link;
  public final Double powerW;
  public final double radioPowerW;
  public final int probeEvery;
  private final double backoffS;
  private final double maxBackoffS;
  private final DoubleSupplier clock;
  private final CostModel edge;
  private Double serverMs;
  private double answerBytes = ANSWER_BYTES;
  private int sinceOffload;
  private int failures;
  private double retryAt = Double.NEGATIVE_INFINITY;
  private String lastError;
  private Boolean offloading; // the last real (not probe) choice: null before the first
  private double speed = 1.0;
  private boolean hasEnergy;

  /** With Python's defaults: power from the local cost model, 1 W radio, probe every 100. */
  public OffloadPolicy(Policy local, List<OffloadPoint> points, LinkEstimate link) {
    this(local, points, link, null, 1.0, 100, 1.0, 60.0, () -> System.nanoTime() / 1e9);
  }

  public OffloadPolicy(
      Policy local,
      List<OffloadPoint> points,
      LinkEstimate link,
      Double powerW,
      double radioPowerW,
      int probeEvery,
      double backoffS,
      double maxBackoffS,
      DoubleSupplier clockSeconds) {
    if (points == null || points.isEmpty()) {
      throw new PolicyException(
          "offloading needs offload points (keep × codec with accuracy and payload bytes):"
              + " export the split bundle from a checkpoint with labelled data");
    }
    if (!(radioPowerW > 0)) {
      throw new PolicyException("radioPowerW must be > 0, got " + radioPowerW);
    }
    if (probeEvery < 1) {
      throw new PolicyException("probeEvery must be >= 1, got " + probeEvery);
    }
    this.local = local;
    this.points = List.copyOf(points);
    this.link = link == null ? new LinkEstimate() : link;
    this.powerW = powerW == null ? local.costModel.powerW : powerW;
    this.radioPowerW = radioPowerW;
    this.probeEvery = probeEvery;
    this.backoffS = backoffS;
    this.maxBackoffS = maxBackoffS;
    this.clock = clockSeconds;
    this.edge = new CostModel(1, null, new double[] {1.0}, this.powerW, local.costModel.alpha, 2.0);
  }

  /** The device half took ms for rows samples; its energy counts against the local pacing. */
  public void observeEdge(double ms, int rows, Double energyMj) {
    edge.observe(0, ms, energyMj, rows, speed);
    if (energyMj == null && powerW != null) {
      energyMj = ms * powerW;
    }
    local.spend(energyMj == null ? 0.0 : energyMj, rows);
  }

  /** An offload succeeded (the client already fed the link): seconds on the link and server. */
  public void observeOffload(Double serverMillis, long answerBytes, int rows, double seconds) {
    local.spend(radioPowerW * seconds * 1e3, 0);
    int n = Math.max(rows, 1);
    if (serverMillis != null) {
      double perRow = serverMillis / n;
      serverMs = serverMs == null ? perRow : 0.8 * serverMs + 0.2 * perRow;
    }
    this.answerBytes = 0.8 * this.answerBytes + 0.2 * answerBytes / n;
    failures = 0;
    lastError = null;
  }

  /** An offload failed (it was answered locally): wait before the next try. */
  public void failed(String error) {
    failures += 1;
    double wait = Math.min(backoffS * Math.pow(2, failures - 1), maxBackoffS);
    retryAt = clock.getAsDouble() + wait;
    lastError = error;
  }

  /** Local or cloud for the next request under the device state. */
  public OffloadDecision decide(DeviceState state) {
    Decision d = local.decide(state);
    speed = state == null ? 1.0 : state.speed();
    hasEnergy = d.costs().hasEnergy();
    double now = clock.getAsDouble();
    if (now < retryAt) {
      return done(false, null, d, List.of(), false,
          "not offloading: the last offload failed (" + lastError + "); " + failures
              + " failure(s) in a row");
    }
    sinceOffload += 1;
    if (d.how().equals("unknown")) {
      return done(false, null, d, List.of(), false,
          "answered locally: the local model's stage times are not measured yet");
    }
    if (!link.known() || !edge.known()) {
      return probe(d, (!link.known() ? "the link" : "the device half's time") + " has not been measured yet");
    }
    if (sinceOffload > probeEvery) {
      return probe(d, "the link has not been used for " + (sinceOffload - 1) + " requests");
    }
    double[] lat = edge.stageLatencyMs();
    double edgeMs = lat[0];
    double tailMs = edge.stageTailMs(lat)[0];
    List<OffloadDecision.CloudPrediction> cloud = new ArrayList<>();
    for (OffloadPoint p : points) {
      cloud.add(predict(p, d, speed, edgeMs, tailMs));
    }
    OffloadDecision.CloudPrediction best = best(d, cloud);
    if (best == null) {
      return done(false, null, d, cloud, false,
          "answered locally with '" + d.point().name() + "': no offload point is within the budgets");
    }
    String[] why = new String[1];
    OffloadDecision.CloudPrediction chosen = againstLocal(d, best, why);
    if (chosen == null) {
      return done(false, null, d, cloud, false, why[0]);
    }
    return done(true, chosen.point(), d, cloud, false, why[0]);
  }

  private OffloadDecision probe(Decision d, String why) {
    OffloadPoint smallest = points.get(0);
    for (OffloadPoint p : points) {
      if (p.payloadBytes() < smallest.payloadBytes()) {
        smallest = p;
      }
    }
    return done(true, smallest, d, List.of(), true,
        "probe: " + why + "; offloading this request at the smallest payload (" + smallest.name() + ")");
  }

  private OffloadDecision done(
      boolean offload, OffloadPoint point, Decision d, List<OffloadDecision.CloudPrediction> cloud,
      boolean probe, String reason) {
    if (offload) {
      sinceOffload = 0;
    }
    if (!probe) {
      offloading = offload;
    }
    return new OffloadDecision(offload, point, d, List.copyOf(cloud), probe, reason);
  }

  private OffloadDecision.CloudPrediction predict(
      OffloadPoint p, Decision d, double speed, double edgeMs, double tailMs) {
    double edgeReal = edgeMs / speed;
    double edgeWorst = tailMs / speed;
    double linkMs = link.secondsFor(p.payloadBytes() + answerBytes) * 1e3;
    double server = serverMs == null ? 0.0 : serverMs;
    double worst = edgeWorst + linkMs + server + edge.tail * link.deviationSeconds() * 1e3;
    Double energy = null;
    if (powerW != null) {
      energy = edgeMs * powerW + radioPowerW * (linkMs + server);
    }
    double enLim = d.limits()[1];
    double floor = d.limits()[2];
    Double budget = d.rule().latencyMs();
    String breaks = null;
    if (budget != null && worst > budget) {
      breaks = "predicted latency " + worst + " ms > " + budget + " ms";
    } else if (enLim < Double.POSITIVE_INFINITY && (energy == null || energy > enLim)) {
      breaks = energy == null ? "its energy is unknown (give powerW)" : "predicted energy " + energy + " mJ > " + enLim + " mJ";
    } else if (floor > Double.NEGATIVE_INFINITY && (p.accuracy() == null || p.accuracy() < floor)) {
      breaks = "expected accuracy " + p.accuracy() + " < floor " + floor;
    }
    return new OffloadDecision.CloudPrediction(p, edgeReal, linkMs, server, worst, energy, breaks);
  }

  private double cost(OffloadDecision.CloudPrediction c) {
    return hasEnergy && c.energyMj() != null ? c.energyMj() : c.latencyMs();
  }

  /** The best offload point within the budgets, by the local policy's criterion (first of equals). */
  private OffloadDecision.CloudPrediction best(Decision d, List<OffloadDecision.CloudPrediction> cloud) {
    boolean floor = d.limits()[2] > Double.NEGATIVE_INFINITY;
    OffloadDecision.CloudPrediction best = null;
    for (OffloadDecision.CloudPrediction c : cloud) {
      if (c.breaks() != null) {
        continue;
      }
      if (best == null) {
        best = c;
        continue;
      }
      double[] a = key(c, floor);
      double[] b = key(best, floor);
      if (a[0] < b[0] || (a[0] == b[0] && a[1] < b[1])) {
        best = c;
      }
    }
    return best;
  }

  private double[] key(OffloadDecision.CloudPrediction c, boolean floor) {
    Double acc = c.point().accuracy();
    if (floor) {
      return new double[] {cost(c), -(acc == null || acc == 0.0 ? 0.0 : acc)};
    }
    return new double[] {-(acc == null || acc == 0.0 ? Double.NEGATIVE_INFINITY : acc), cost(c)};
  }

  private OffloadDecision.CloudPrediction againstLocal(
      Decision d, OffloadDecision.CloudPrediction best, String[] why) {
    String nameL = "'" + d.point().name() + "'";
    String words = best.point().name() + ": predicted " + best.latencyMs() + " ms";
    if (!d.feasible()) {
      why[0] = "offloaded: " + words + "; no local point meets the budgets";
      return best;
    }
    boolean off = Boolean.TRUE.equals(offloading);
    double floor = d.limits()[2];
    Decision.Costs costs = d.costs();
    if (floor > Double.NEGATIVE_INFINITY) {
      double localCost;
      if (!costs.known()) {
        localCost = Double.POSITIVE_INFINITY;
      } else if (costs.hasEnergy()) {
        localCost = costs.cost();
      } else {
        localCost = costs.meanLatencyMs() / speed;
      }
      double cost = cost(best);
      double margin = local.spec.costMargin * (off ? cost : localCost);
      if (!off ? cost < localCost - margin : cost <= localCost + margin) {
        why[0] = "offloaded: " + words + "; cheaper than local " + nameL + ", both above the floor";
        return best;
      }
      why[0] = "answered locally with " + nameL + ": offloading does not save more than cost_margin";
      return null;
    }
    Double accC = best.point().accuracy();
    Double accL = d.point().accuracy();
    double gain = (accC != null ? accC : Double.NEGATIVE_INFINITY) - (accL != null ? accL : Double.NEGATIVE_INFINITY);
    double margin = local.spec.accuracyMargin + 1e-9;
    if (gain > margin || (off && gain >= -margin)) {
      why[0] = "offloaded: " + words + "; local " + nameL + " expects accuracy " + accL
          + (gain <= margin ? " (kept: within accuracy_margin of local)" : "");
      return best;
    }
    why[0] = "answered locally with " + nameL + ": the best offload point gains " + gain
        + " accuracy, not more than accuracy_margin";
    return null;
  }
}
