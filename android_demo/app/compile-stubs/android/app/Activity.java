// Signature-only stand-in for compiling the demo app with javac on a machine without the Android
// SDK (android_demo/app/check.sh); never packaged: the app gets the real class from android.jar.
// Copies the signatures (only the members the app uses, same names, types and modifiers) of
// android.app.Activity (API 34).
package android.app;

import android.os.Bundle;
import android.view.View;

public class Activity extends android.view.ContextThemeWrapper {
  public Activity() {}

  protected void onCreate(Bundle savedInstanceState) {}

  protected void onDestroy() {}

  public void setContentView(int layoutResID) {}

  public <T extends View> T findViewById(int id) {
    throw new UnsupportedOperationException("stub");
  }

  public final void runOnUiThread(Runnable action) {}
}
