package dev.ponder.core.engine;

/**
 * Exit rules, a port of Python's {@code ponder._core.rules} for one sample: each scores an exit's
 * log-probabilities; the sample leaves at exit k when its score is at least that exit's
 * threshold. Scores grow with confidence for every rule. Probabilities are computed in double
 * (as Python does: float32 rounds confident exits' max-probabilities to exactly 1.0). A rule
 * object holds one sample's state between exits: make one per request with {@link #of}.
 */
public abstract class ExitRule {
  /** The rule's name as a manifest writes it. */
  public final String name;

  ExitRule(String name) {
    this.name = name;
  }

  /**
   * Scores one exit; returns the score and sets {@link #predicted()} to the log-probabilities the
   * answer is read from (the rule's own ensemble for an unweighted ZTW rule).
   */
  public abstract double step(float[] logp);

  /** Whether a score depends on this exit's output only. */
  public boolean stateless() {
    return true;
  }

  /** The log-probabilities to predict with after the last step. */
  public double[] predicted() {
    return predicted;
  }

  double[] predicted;

  /**
   * The rule {@code name} ("max_prob", "entropy", "margin", "patience", "ztw"); {@code
   * ensembled}: the exits already output ZTW ensembles. "none" (a bundle without exits) stands in
   * as max_prob, as the Python engine does.
   */
  public static ExitRule of(String name, boolean ensembled) {
    switch (name) {
      case "none":
      case "max_prob":
        return new ExitRule(name) {
          @Override
          public double step(float[] logp) {
            predicted = widen(logp);
            return max(probs(predicted));
          }
        };
      case "entropy":
        return new ExitRule(name) {
          @Override
          public double step(float[] logp) {
            predicted = widen(logp);
            double[] p = probs(predicted);
            double[] terms = new double[p.length];
            for (int c = 0; c < p.length; c++) {
              terms[c] = p[c] * Math.log(Math.max(p[c], 1e-30));
            }
            return 1.0 - (-sum(terms, 0, terms.length)) / Math.log(logp.length);
          }
        };
      case "margin":
        return new ExitRule(name) {
          @Override
          public double step(float[] logp) {
            predicted = widen(logp);
            double[] p = probs(predicted);
            double first = Double.NEGATIVE_INFINITY;
            double second = Double.NEGATIVE_INFINITY;
            for (double v : p) {
              if (v > first) {
                second = first;
                first = v;
              } else if (v > second) {
                second = v;
              }
            }
            return first - second;
          }
        };
      case "patience":
        return new ExitRule(name) {
          private int previous = -1;
          private double count;

          @Override
          public double step(float[] logp) {
            predicted = widen(logp);
            int label = argmax(predicted);
            count = label == previous ? count + 1 : 1.0;
            previous = label;
            return count;
          }

          @Override
          public boolean stateless() {
            return false;
          }
        };
      case "ztw":
        return new Ztw(ensembled);
      default:
        throw new IllegalArgumentException(
            "unknown exit rule '" + name + "' (this app knows max_prob, entropy, margin, patience,"
                + " ztw); update the app or re-export the bundle with one of those");
    }
  }

  /** ZTW: largest probability of the geometric ensemble of every exit so far. */
  private static final class Ztw extends ExitRule {
    private final boolean ensembled;
    private float[] sum;
    private int n;

    Ztw(boolean ensembled) {
      super("ztw");
      this.ensembled = ensembled;
    }

    @Override
    public boolean stateless() {
      return ensembled;
    }

    @Override
    public double step(float[] logp) {
      if (!ensembled) {
        // Python keeps the running sum in the exits' dtype (float32) and divides in float64
        if (sum == null) {
          sum = logp.clone();
        } else {
          for (int c = 0; c < sum.length; c++) {
            sum[c] += logp[c];
          }
        }
        n += 1;
        double[] mean = new double[sum.length];
        for (int c = 0; c < sum.length; c++) {
          mean[c] = (double) sum[c] / n;
        }
        double[] lsm = logSoftmax(mean);
        float[] rounded = new float[lsm.length];
        for (int c = 0; c < lsm.length; c++) {
          rounded[c] = (float) lsm[c];
        }
        logp = rounded;
      }
      predicted = widen(logp);
      return max(probs(predicted));
    }
  }

  static double[] widen(float[] x) {
    double[] out = new double[x.length];
    for (int c = 0; c < x.length; c++) {
      out[c] = x[c];
    }
    return out;
  }

  /** Softmax in double (max subtracted first). */
  static double[] probs(double[] logp) {
    double[] e = expShifted(logp, max(logp));
    double sum = sum(e, 0, e.length);
    for (int c = 0; c < e.length; c++) {
      e[c] /= sum;
    }
    return e;
  }

  static double[] logSoftmax(double[] x) {
    double top = max(x);
    double[] e = expShifted(x, top);
    double log = Math.log(sum(e, 0, e.length));
    double[] out = new double[x.length];
    for (int c = 0; c < x.length; c++) {
      out[c] = x[c] - top - log;
    }
    return out;
  }

  /**
   * numpy's pairwise sum (8 accumulators per block of up to 128, halves above), so that sums over
   * classes round as they do in Python: checked bit for bit against {@code ndarray.sum}.
   */
  static double sum(double[] a, int off, int n) {
    if (n < 8) {
      double res = 0.0;
      for (int i = 0; i < n; i++) {
        res += a[off + i];
      }
      return res;
    }
    if (n <= 128) {
      double[] r = new double[8];
      System.arraycopy(a, off, r, 0, 8);
      int i = 8;
      for (; i < n - (n % 8); i += 8) {
        for (int j = 0; j < 8; j++) {
          r[j] += a[off + i + j];
        }
      }
      double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
      for (; i < n; i++) {
        res += a[off + i];
      }
      return res;
    }
    int half = n / 2;
    half -= half % 8;
    return sum(a, off, half) + sum(a, off + half, n - half);
  }

  /** exp(x - top) per element (top: the max, so that nothing overflows). */
  private static double[] expShifted(double[] x, double top) {
    double[] e = new double[x.length];
    for (int c = 0; c < x.length; c++) {
      e[c] = Math.exp(x[c] - top);
    }
    return e;
  }

  static double max(double[] x) {
    double top = Double.NEGATIVE_INFINITY;
    for (double v : x) {
      top = Math.max(top, v);
    }
    return top;
  }

  /** Index of the largest value, the first of equals (numpy's argmax). */
  public static int argmax(double[] x) {
    int best = 0;
    for (int c = 1; c < x.length; c++) {
      if (x[c] > x[best]) {
        best = c;
      }
    }
    return best;
  }
}
