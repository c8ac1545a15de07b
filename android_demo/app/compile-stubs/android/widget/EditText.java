// Signature-only stand-in for compiling the demo app with javac on a machine without the Android
// SDK (android_demo/app/check.sh); never packaged: the app gets the real class from android.jar.
// Copies the signatures (only the members the app uses, same names, types and modifiers) of
// android.widget.EditText (API 34).
package android.widget;

public class EditText extends TextView {
  public EditText(android.content.Context context) {
    super(context);
  }

  @Override
  public android.text.Editable getText() {
    throw new UnsupportedOperationException("stub");
  }
}
