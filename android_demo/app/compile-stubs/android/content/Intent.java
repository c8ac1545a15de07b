// Signature-only stand-in for compiling the demo app with javac on a machine without the Android
// SDK (android_demo/app/check.sh); never packaged: the app gets the real class from android.jar.
// Copies the signatures (only the members the app uses, same names, types and modifiers) of
// android.content.Intent (API 34).
package android.content;

public class Intent {
  public static final String ACTION_BATTERY_CHANGED = "android.intent.action.BATTERY_CHANGED";

  public Intent() {}

  public int getIntExtra(String name, int defaultValue) {
    throw new UnsupportedOperationException("stub");
  }
}
