// Signature-only stand-in for compiling the demo app with javac on a machine without the Android
// SDK (android_demo/app/check.sh); never packaged: the app gets the real class from android.jar.
// Copies the signatures (only the members the app uses, same names, types and modifiers) of
// android.os.Bundle (API 34); the app only passes it on.
package android.os;

public final class Bundle {
  public Bundle() {}
}
