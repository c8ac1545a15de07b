// Signature-only stand-in for compiling the demo app with javac on a machine without the Android
// SDK (android_demo/app/check.sh); never packaged: the app gets the real class from android.jar.
// Copies the signatures (only the members the app uses, same names, types and modifiers) of
// android.content.ContextWrapper (API 34).
package android.content;

public class ContextWrapper extends Context {
  public ContextWrapper(Context base) {}

  @Override
  public java.io.File getFilesDir() {
    throw new UnsupportedOperationException("stub");
  }

  @Override
  public java.io.File getExternalFilesDir(String type) {
    throw new UnsupportedOperationException("stub");
  }

  @Override
  public Intent registerReceiver(BroadcastReceiver receiver, IntentFilter filter) {
    throw new UnsupportedOperationException("stub");
  }

  @Override
  public Object getSystemService(String name) {
    throw new UnsupportedOperationException("stub");
  }

  @Override
  public SharedPreferences getSharedPreferences(String name, int mode) {
    throw new UnsupportedOperationException("stub");
  }
}
