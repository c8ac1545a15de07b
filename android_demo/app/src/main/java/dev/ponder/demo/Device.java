package dev.ponder.demo;

import android.content.Context;
import android.content.Intent;
import android.content.IntentFilter;
import android.os.BatteryManager;
import android.os.PowerManager;

/** Battery and thermal state from Android, read before every request. */
final class Device {
  /**
   * batteryPercent, charging: from the sticky ACTION_BATTERY_CHANGED intent (null when there
   * is none); thermalStatus: PowerManager's (-1 unknown); speed and temperatureC: the proxies
   * {@link Thermal} maps it to; batteryTemperatureC: the battery's own sensor, shown only;
   * timeS: seconds since the app started.
   */
  record Snapshot(
      Double batteryPercent,
      Boolean charging,
      int thermalStatus,
      double speed,
      Double temperatureC,
      Double batteryTemperatureC,
      double timeS) {

    String describe() {
      String battery =
          batteryPercent == null
              ? "battery ?"
              : String.format("battery %.0f%%%s", batteryPercent,
                  Boolean.TRUE.equals(charging) ? " charging" : "");
      return battery + " | thermal " + Thermal.name(thermalStatus)
          + String.format(" (speed %.2f)", speed);
    }
  }

  private final Context context;
  private final long start = System.nanoTime();

  Device(Context context) {
    this.context = context;
  }

  Snapshot read() {
    // a null receiver returns the sticky intent without registering anything
    Intent battery = context.registerReceiver(null, new IntentFilter(Intent.ACTION_BATTERY_CHANGED));
    Double percent = null;
    Boolean charging = null;
    Double batteryTemperature = null;
    if (battery != null) {
      int level = battery.getIntExtra(BatteryManager.EXTRA_LEVEL, -1);
      int scale = battery.getIntExtra(BatteryManager.EXTRA_SCALE, -1);
      if (level >= 0 && scale > 0) {
        percent = 100.0 * level / scale;
      }
      int status = battery.getIntExtra(BatteryManager.EXTRA_STATUS, -1);
      int plugged = battery.getIntExtra(BatteryManager.EXTRA_PLUGGED, -1);
      if (status >= 0 || plugged >= 0) {
        charging =
            status == BatteryManager.BATTERY_STATUS_CHARGING
                || status == BatteryManager.BATTERY_STATUS_FULL
                || plugged > 0;
      }
      int tenths = battery.getIntExtra(BatteryManager.EXTRA_TEMPERATURE, Integer.MIN_VALUE);
      if (tenths != Integer.MIN_VALUE) {
        batteryTemperature = tenths / 10.0;
      }
    }
    PowerManager power = context.getSystemService(PowerManager.class);
    int thermal = power == null ? -1 : power.getCurrentThermalStatus();  // API 29+; minSdk is 34
    double timeS = (System.nanoTime() - start) / 1e9;
    return new Snapshot(percent, charging, thermal, Thermal.speed(thermal),
        Thermal.temperatureC(thermal), batteryTemperature, timeS);
  }
}
