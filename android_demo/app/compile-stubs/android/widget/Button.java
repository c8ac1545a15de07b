// Signature-only stand-in for compiling the demo app with javac on a machine without the Android
// SDK (android_demo/app/check.sh); never packaged: the app gets the real class from android.jar.
// Copies the signatures (only the members the app uses, same names, types and modifiers) of
// android.widget.Button (API 34).
package android.widget;

public class Button extends TextView {
  public Button(android.content.Context context) {
    super(context);
  }
}
