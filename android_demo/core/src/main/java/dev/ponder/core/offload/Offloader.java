package dev.ponder.core.offload;

import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.function.LongSupplier;

/**
 * Offloading without losing a request, as Python's {@code Offloader}: each request goes to the
 * cloud through the {@link OffloadClient}; when that fails (refused, timeout, an HTTP error, a
 * malformed answer) the same request is answered by the local model, and the {@link Result} says
 * where its answer came from.
 *
 * <p>After a failure the cloud is skipped for a while (those requests are answered locally), then
 * the next request probes it again: the wait is Python's {@code OffloadPolicy} back-off, {@code
 * backoffMs} after the first failure, doubling with each failure in a row up to {@code
 * maxBackoffMs}; a success ends it. The clock is injectable, so tests need no sleeps.
 *
 * @param <I> what the app's models take (an image, token ids, ...)
 */
public final class Offloader<I> {
  public static final String CLOUD = "cloud";
  public static final String LOCAL = "local";
  public static final String FALLBACK = "fallback";

  /** The device half: the payloads (one per sample) to send for {@code inputs}. */
  @FunctionalInterface
  public interface DeviceHalf<I> {
    List<byte[]> payloads(I inputs);
  }

  /** The local model (e.g. the app's ExecuTorch program): logits [N][C] for {@code inputs}. */
  @FunctionalInterface
  public interface LocalModel<I> {
    float[][] logits(I inputs);
  }

  /**
   * Where an answer came from. source: "cloud", "local" (not offloaded: asked not to, or backing
   * off after a failure; {@code backingOff} says which) or "fallback" (offloading failed: {@code
   * error} says why); logits [N][C] from whichever answered; bytesSent: the payloads' bytes;
   * millis: the whole call.
   */
  public record Result(
      String source,
      float[][] logits,
      OffloadException error,
      long bytesSent,
      double millis,
      boolean backingOff) {
    /** The class of each row: the argmax of its logits (the first on ties, as numpy). */
    public int[] prediction() {
      int[] out = new int[logits.length];
      for (int r = 0; r < logits.length; r++) {
        int best = 0;
        for (int c = 1; c < logits[r].length; c++) {
          if (logits[r][c] > logits[r][best]) {
            best = c;
          }
        }
        out[r] = best;
      }
      return out;
    }
  }

  private final OffloadClient client;
  private final DeviceHalf<I> device;
  private final LocalModel<I> local;
  private final LongSupplier clockMs;
  private final long backoffMs;
  private final long maxBackoffMs;
  private int failures;
  private long retryAtMs = Long.MIN_VALUE;
  private OffloadException lastError;

  /** With Python's back-off (1 s, doubling up to 60 s) on the system clock. */
  public Offloader(OffloadClient client, DeviceHalf<I> device, LocalModel<I> local) {
    this(client, device, local, 1000, 60_000, () -> System.nanoTime() / 1_000_000);
  }

  /**
   * @param clockMs milliseconds from any origin (monotonic); tests pass their own
   */
  public Offloader(
      OffloadClient client,
      DeviceHalf<I> device,
      LocalModel<I> local,
      long backoffMs,
      long maxBackoffMs,
      LongSupplier clockMs) {
    if (backoffMs < 0 || maxBackoffMs < backoffMs) {
      throw new IllegalArgumentException(
          "need 0 <= backoffMs <= maxBackoffMs, got " + backoffMs + " and " + maxBackoffMs);
    }
    this.client = Objects.requireNonNull(client, "client");
    this.device = Objects.requireNonNull(device, "device");
    this.local = Objects.requireNonNull(local, "local");
    this.backoffMs = backoffMs;
    this.maxBackoffMs = maxBackoffMs;
    this.clockMs = Objects.requireNonNull(clockMs, "clockMs");
  }

  public OffloadClient client() {
    return client;
  }

  /** Answers {@code inputs}: from the cloud unless backing off, else (or on failure) locally. */
  public Result offload(I inputs, Map<String, Object> parameters) {
    return offload(inputs, parameters, true);
  }

  /**
   * Answers {@code inputs}; with {@code tryCloud} false (or while backing off after a failure)
   * locally without sending anything.
   *
   * @param parameters the split's parameters for the payloads (split.json's params with keep and
   *     codec)
   */
  public Result offload(I inputs, Map<String, Object> parameters, boolean tryCloud) {
    long start = System.nanoTime();
    boolean backingOff;
    synchronized (this) {
      backingOff = tryCloud && clockMs.getAsLong() < retryAtMs;
    }
    OffloadException error = null;
    long sent = 0;
    if (tryCloud && !backingOff) {
      List<byte[]> payloads = device.payloads(inputs);
      for (byte[] p : payloads) {
        sent += p.length;
      }
      try {
        float[][] logits = client.inferPayloads(payloads, parameters);
        synchronized (this) {
          failures = 0;
          lastError = null;
          retryAtMs = Long.MIN_VALUE;
        }
        return new Result(CLOUD, logits, null, sent, millisSince(start), false);
      } catch (OffloadException e) {
        error = e;
        failed(e);
      }
    }
    float[][] logits = local.logits(inputs);
    String source = error != null ? FALLBACK : LOCAL;
    return new Result(source, logits, error, sent, millisSince(start), backingOff);
  }

  /** Failures in a row (0 after a success). */
  public synchronized int failures() {
    return failures;
  }

  /** Milliseconds until the cloud is tried again (0: the next request tries it). */
  public synchronized long backoffLeftMs() {
    long now = clockMs.getAsLong();
    return now >= retryAtMs ? 0 : retryAtMs - now;
  }

  /** The last failure, while backing off after it; null after a success. */
  public synchronized OffloadException lastError() {
    return lastError;
  }

  /** Why the next request will or will not go to the cloud, in words. */
  public synchronized String explain() {
    long left = backoffLeftMs();
    if (left > 0) {
      return "not offloading: the last offload failed (" + lastError.describe() + "); "
          + failures + " failure(s) in a row, next try in " + left + " ms";
    }
    return failures == 0
        ? "offloading to " + client.baseUrl() + "; " + client.link()
        : "probing " + client.baseUrl() + " again after " + failures + " failure(s) in a row";
  }

  private synchronized void failed(OffloadException e) {
    failures++;
    double wait = Math.min(backoffMs * Math.pow(2, failures - 1), (double) maxBackoffMs);
    retryAtMs = clockMs.getAsLong() + (long) wait;
    lastError = e;
  }

  private static double millisSince(long startNanos) {
    return (System.nanoTime() - startNanos) / 1e6;
  }
}
