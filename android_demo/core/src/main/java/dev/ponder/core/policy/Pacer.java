package dev.ponder.core.policy;

/**
 * Inference energy per window of {@code pacing.windowS()} seconds (Python's Pacer): the first
 * window starts at the first clock reading. allowance = unspent budget / max(1, requests expected
 * in the rest of the window), the request rate being a time-weighted EWMA; 0 once the budget is
 * spent, infinite while charging (energy spent then is not counted).
 */
public final class Pacer {
  static final double RATE_WINDOWS = 12;
  static final double RATE_TAU_MAX_S = 300.0;

  public final EnergyPacing pacing;
  private final double tauS;
  private Double startS;
  private double nowS;
  private double spentMj;
  private Double rate;
  private boolean charging;
  private double pending;
  private Double sinceS;

  public Pacer(EnergyPacing pacing) {
    this.pacing = pacing;
    this.tauS = Math.min(pacing.windowS() / RATE_WINDOWS, RATE_TAU_MAX_S);
  }

  /** Moves the clock to timeS: folds the requests since into the rate, starts a new window. */
  public void tick(double timeS, Boolean charging) {
    if (!Double.isFinite(timeS)) {
      throw new PolicyException("pacing needs a finite DeviceState.timeS, got " + timeS);
    }
    double window = pacing.windowS();
    if (startS == null || timeS < startS) {
      startS = timeS;
      spentMj = 0.0;
      sinceS = timeS;
    } else if (timeS >= startS + window) {
      startS += Math.floor((timeS - startS) / window) * window;
      spentMj = 0.0;
    }
    double dt = timeS - sinceS;
    if (dt > 0) {
      double decay = Math.exp(-dt / tauS);
      double fresh = pending / dt;
      rate = rate == null ? fresh : rate * decay + fresh * (1 - decay);
      pending = 0.0;
      sinceS = timeS;
    }
    nowS = timeS;
    this.charging = Boolean.TRUE.equals(charging);
  }

  /** Charges energyMj (and the requests served with it) to the current window. */
  public void spend(double energyMj, double requests) {
    if (!(energyMj >= 0 && requests >= 0) || Double.isInfinite(energyMj + requests)) {
      throw new PolicyException(
          "spend() needs energy_mj >= 0 and requests >= 0, got " + energyMj + ", " + requests);
    }
    pending += requests;
    if (!charging) {
      spentMj += energyMj;
    }
  }

  public double spentMj() {
    return spentMj;
  }

  /** Seconds left in the current window. */
  public double leftS() {
    double start = startS == null ? nowS : startS;
    return start + pacing.windowS() - nowS;
  }

  /** Energy per inference the window can still afford, mJ (infinite while charging). */
  public double allowanceMj() {
    if (charging) {
      return Double.POSITIVE_INFINITY;
    }
    double unspent = Math.max(0.0, pacing.budgetMj() - spentMj);
    double expected = (rate == null ? 0.0 : rate) * leftS();
    return unspent / Math.max(1.0, expected);
  }

  /** x cut to 3 significant digits, never up (an allowance cached decisions can share). */
  static double roundDown(double x) {
    if (!(x > 0 && x < Double.POSITIVE_INFINITY)) {
      return x;
    }
    double scale = Math.pow(10, 3 - 1 - Math.floor(Math.log10(x)));
    return Math.floor(x * scale * (1 + 1e-12)) / scale;
  }
}
