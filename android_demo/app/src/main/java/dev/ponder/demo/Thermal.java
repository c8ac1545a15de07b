package dev.ponder.demo;

/**
 * The one place the app turns Android's thermal status (PowerManager.getCurrentThermalStatus,
 * API 29+) into what the policy reads: {@code speed} (1.0 = full clock, 0.5 = stages take twice
 * as long) and a temperature in °C. Android reports a throttling level, not a temperature or a
 * clock, so both are PROXIES chosen to match ponder's simulated phone (throttling starts at
 * 70 °C, reaches half speed at 90 °C): a policy rule written as {@code temperature_above: 70}
 * fires from SEVERE on, one at 80 from CRITICAL on. The Engine's measured stage times already
 * include any throttling; the policy divides its predictions by speed, as it does on the
 * simulator.
 */
final class Thermal {
  private Thermal() {}

  static final String[] NAMES = {
    "NONE", "LIGHT", "MODERATE", "SEVERE", "CRITICAL", "EMERGENCY", "SHUTDOWN"
  };
  // by status 0..6: NONE, LIGHT, MODERATE, SEVERE, CRITICAL, EMERGENCY, SHUTDOWN
  private static final double[] SPEED = {1.0, 1.0, 0.9, 0.75, 0.6, 0.5, 0.5};
  private static final double[] TEMPERATURE_C = {35.0, 55.0, 65.0, 75.0, 85.0, 90.0, 95.0};

  /** Speed proxy for a status; 1.0 where the status is unknown (-1, or older Android). */
  static double speed(int status) {
    return known(status) ? SPEED[status] : 1.0;
  }

  /** Temperature proxy (°C) for a status; null where the status is unknown. */
  static Double temperatureC(int status) {
    return known(status) ? TEMPERATURE_C[status] : null;
  }

  static String name(int status) {
    return known(status) ? NAMES[status] : "unknown";
  }

  private static boolean known(int status) {
    return status >= 0 && status < SPEED.length;
  }
}
