package dev.ponder.core.offload;

/**
 * Round-trip time and bandwidth of the link, exponentially weighted over the client's own
 * transfers (weight {@code alpha} per new sample), as Python's {@code LinkEstimate}: a transfer
 * under {@value #SMALL} bytes measures the round trip, a larger one the bandwidth (what is left
 * after the round trip); a bandwidth sample off the estimate by more than 3x three times running
 * is taken as another network, and the estimate restarts from it. Safe to share between threads.
 */
public final class LinkEstimate {
  /** Bytes: a transfer this small measures the round trip, not the bandwidth. */
  public static final int SMALL = 2048;

  private final double alpha;
  private Double rttSeconds;
  private Double bandwidth; // bytes per second, both ways together
  private double deviationSeconds;
  private int samples;
  private int changes;
  private int far;

  public LinkEstimate() {
    this(0.3);
  }

  public LinkEstimate(double alpha) {
    if (!(alpha > 0 && alpha <= 1)) {
      throw new IllegalArgumentException("alpha must be in (0, 1], got " + alpha);
    }
    this.alpha = alpha;
  }

  /** One transfer of {@code bytes} (request and answer) that took {@code seconds}, server time
   * excluded. */
  public synchronized void add(double seconds, long bytes) {
    Double predicted = secondsFor(bytes);
    if (predicted != null) {
      deviationSeconds = ewma(deviationSeconds, Math.abs(seconds - predicted));
    }
    if (rttSeconds == null || bytes < SMALL) {
      rttSeconds = rttSeconds == null ? seconds : ewma(rttSeconds, seconds);
    }
    double payloadSeconds = Math.max(seconds - rttSeconds, 1e-6);
    if (bytes >= SMALL) {
      double rate = bytes / payloadSeconds;
      if (bandwidth != null && !(rate / bandwidth > 1.0 / 3 && rate / bandwidth < 3)) {
        far++;
        if (far >= 3) { // a new link: forget the old one
          bandwidth = null;
          far = 0;
          changes++;
        }
      } else {
        far = 0;
      }
      bandwidth = bandwidth == null ? rate : ewma(bandwidth, rate);
    }
    samples++;
  }

  /** Whether a transfer has been measured. */
  public synchronized boolean known() {
    return rttSeconds != null;
  }

  /** The round trip in milliseconds, or null before any transfer. */
  public synchronized Double rttMillis() {
    return rttSeconds == null ? null : rttSeconds * 1e3;
  }

  /** Bytes per second (both ways together), or null before a transfer of {@value #SMALL}+ bytes. */
  public synchronized Double bytesPerSecond() {
    return bandwidth;
  }

  /** Expected seconds to send and answer {@code bytes}, or null before any transfer. */
  public synchronized Double secondsFor(double bytes) {
    if (rttSeconds == null) {
      return null;
    }
    return rttSeconds + (bandwidth != null && bandwidth > 0 ? bytes / bandwidth : 0.0);
  }

  /** EW mean absolute error of the prediction made before each transfer, in seconds. */
  public synchronized double deviationSeconds() {
    return deviationSeconds;
  }

  /** EW mean absolute error of the prediction made before each transfer, in milliseconds. */
  public synchronized double deviationMillis() {
    return deviationSeconds * 1e3;
  }

  /** Transfers measured. */
  public synchronized int samples() {
    return samples;
  }

  /** How many times the estimate restarted on a new link. */
  public synchronized int changes() {
    return changes;
  }

  @Override
  public synchronized String toString() {
    if (rttSeconds == null) {
      return "link not measured yet";
    }
    String bw =
        bandwidth == null || bandwidth == 0
            ? "bandwidth unknown"
            : String.format("%.3g Mbit/s", bandwidth * 8 / 1e6);
    return String.format(
        "link: RTT %.3g ms, %s (EWMA of %d transfers, error ±%.2g ms)",
        rttSeconds * 1e3, bw, samples, deviationSeconds * 1e3);
  }

  private double ewma(double old, double value) {
    return (1 - alpha) * old + alpha * value;
  }
}
