// Signature-only stand-in for compiling the demo app with javac on a machine without the Android
// SDK (android_demo/app/check.sh); never packaged: the app gets the real class from android.jar.
// Copies the signatures (only the members the app uses, same names, types and modifiers) of
// android.content.Context (API 34).
package android.content;

public abstract class Context {
  public static final int MODE_PRIVATE = 0;
  public static final String POWER_SERVICE = "power";

  public abstract java.io.File getFilesDir();

  public abstract java.io.File getExternalFilesDir(String type);

  public abstract Intent registerReceiver(BroadcastReceiver receiver, IntentFilter filter);

  public abstract Object getSystemService(String name);

  public final <T> T getSystemService(Class<T> serviceClass) {
    throw new UnsupportedOperationException("stub");
  }

  public abstract SharedPreferences getSharedPreferences(String name, int mode);
}
