// Signature-only stand-in for compiling the demo app with javac on a machine without the Android
// SDK (android_demo/app/check.sh); never packaged: the app gets the real class from android.jar.
// Copies the signatures (only the members the app uses, same names, types and modifiers) of
// android.os.PowerManager (API 29+ thermal status; API 34).
package android.os;

public final class PowerManager {
  public static final int THERMAL_STATUS_NONE = 0;
  public static final int THERMAL_STATUS_LIGHT = 1;
  public static final int THERMAL_STATUS_MODERATE = 2;
  public static final int THERMAL_STATUS_SEVERE = 3;
  public static final int THERMAL_STATUS_CRITICAL = 4;
  public static final int THERMAL_STATUS_EMERGENCY = 5;
  public static final int THERMAL_STATUS_SHUTDOWN = 6;

  PowerManager() {}

  public int getCurrentThermalStatus() {
    throw new UnsupportedOperationException("stub");
  }
}
