// Signature-only stand-in for compiling the demo app with javac on a machine without the Android
// SDK (android_demo/app/check.sh); never packaged: the app gets the real class from android.jar.
// Copies the signatures (only the members the app uses, same names, types and modifiers) of
// android.os.BatteryManager (API 34): the ACTION_BATTERY_CHANGED extras and status values.
package android.os;

public class BatteryManager {
  public static final String EXTRA_LEVEL = "level";
  public static final String EXTRA_SCALE = "scale";
  public static final String EXTRA_STATUS = "status";
  public static final String EXTRA_PLUGGED = "plugged";
  public static final String EXTRA_TEMPERATURE = "temperature";
  public static final int BATTERY_STATUS_CHARGING = 2;
  public static final int BATTERY_STATUS_FULL = 5;

  BatteryManager() {}
}
