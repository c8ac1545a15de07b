// Signature-only stand-in for compiling the demo app with javac on a machine without the Android
// SDK (android_demo/app/check.sh); never packaged: the app gets the real class from android.jar.
// Copies the signatures (only the members the app uses, same names, types and modifiers) of
// android.content.SharedPreferences and SharedPreferences.Editor (API 34).
package android.content;

public interface SharedPreferences {
  String getString(String key, String defValue);

  Editor edit();

  interface Editor {
    Editor putString(String key, String value);

    void apply();
  }
}
