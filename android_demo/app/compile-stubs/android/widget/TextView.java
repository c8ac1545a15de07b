// Signature-only stand-in for compiling the demo app with javac on a machine without the Android
// SDK (android_demo/app/check.sh); never packaged: the app gets the real class from android.jar.
// Copies the signatures (only the members the app uses, same names, types and modifiers) of
// android.widget.TextView (API 34).
package android.widget;

public class TextView extends android.view.View {
  public TextView(android.content.Context context) {
    super(context);
  }

  public final void setText(CharSequence text) {}

  public final void append(CharSequence text) {}

  public CharSequence getText() {
    throw new UnsupportedOperationException("stub");
  }
}
