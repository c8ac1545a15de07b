package dev.ponder.core.policy;

/**
 * What the policy knows about the device at one moment, as {@code ponder.runtime.DeviceState}:
 * battery percent (0..100), charging, temperature (°C) — each null where the device does not say
 * — clock speed (1.0 = full clock, 0.5 = stages take twice as long) and seconds since the start
 * (the energy pacer's clock).
 */
public record DeviceState(
    Double batteryPercent, Boolean charging, Double temperatureC, double speed, double timeS) {

  /** Nothing known: full speed at time 0. */
  public static DeviceState unknown() {
    return new DeviceState(null, null, null, 1.0, 0.0);
  }
}
