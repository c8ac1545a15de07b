package dev.ponder.core;

/** A bundle that cannot be used as it is; the message says what is wrong and what to do. */
public class BundleException extends Exception {
  private static final long serialVersionUID = 1L;

  public BundleException(String message) {
    super(message);
  }

  public BundleException(String message, Throwable cause) {
    super(message, cause);
  }
}
