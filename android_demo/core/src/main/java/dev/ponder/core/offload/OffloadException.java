package dev.ponder.core.offload;

/**
 * Offloading failed; {@link #kind()} says how, so that the caller can answer locally instead. The
 * kinds are those of Python's {@code OffloadError}: "refused" (nothing reachable there),
 * "timeout" (no answer in time), "unauthorized" (HTTP 401: a missing or wrong bearer token),
 * "rejected" (another 4xx: the request is wrong, the message is the server's), "server" (5xx)
 * and "protocol" (an answer that is not the Open Inference Protocol).
 */
public class OffloadException extends Exception {
  private static final long serialVersionUID = 1L;

  public static final String REFUSED = "refused";
  public static final String TIMEOUT = "timeout";
  public static final String UNAUTHORIZED = "unauthorized";
  public static final String REJECTED = "rejected";
  public static final String SERVER = "server";
  public static final String PROTOCOL = "protocol";

  private final String kind;
  private final Integer status;

  public OffloadException(String message, String kind, Integer status) {
    this(message, kind, status, null);
  }

  public OffloadException(String message, String kind, Integer status, Throwable cause) {
    super(message, cause);
    this.kind = kind;
    this.status = status;
  }

  /** One of the kinds above. */
  public String kind() {
    return kind;
  }

  /** The HTTP status the server answered, or null when there was no HTTP answer. */
  public Integer status() {
    return status;
  }

  /** "kind: message", as Python's Offloader reports a fallback's cause. */
  public String describe() {
    return kind + ": " + getMessage();
  }
}
