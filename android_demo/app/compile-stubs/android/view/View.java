// Signature-only stand-in for compiling the demo app with javac on a machine without the Android
// SDK (android_demo/app/check.sh); never packaged: the app gets the real class from android.jar.
// Copies the signatures (only the members the app uses, same names, types and modifiers) of
// android.view.View and View.OnClickListener (API 34).
package android.view;

public class View {
  public View(android.content.Context context) {}

  public void setOnClickListener(OnClickListener l) {}

  public void setEnabled(boolean enabled) {}

  public interface OnClickListener {
    void onClick(View v);
  }
}
