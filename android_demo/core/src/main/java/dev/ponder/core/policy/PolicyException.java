package dev.ponder.core.policy;

/** A policy file, cost table or policy call that cannot be used; the message says what to fix. */
public class PolicyException extends RuntimeException {
  private static final long serialVersionUID = 1L;

  public PolicyException(String message) {
    super(message);
  }
}
