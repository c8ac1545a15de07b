// Signature-only stand-in for compiling the demo app with javac on a machine without the Android
// SDK (android_demo/app/check.sh); never packaged: the app gets the real class from android.jar.
// Copies the signatures (only the members the app uses, same names, types and modifiers) of
// android.util.Log (API 34).
package android.util;

public final class Log {
  private Log() {}

  public static int i(String tag, String msg) {
    throw new UnsupportedOperationException("stub");
  }

  public static int w(String tag, String msg, Throwable tr) {
    throw new UnsupportedOperationException("stub");
  }
}
