// Signature-only stand-in for compiling the demo app with javac on a machine without the Android
// SDK (android_demo/app/check.sh); never packaged: the app gets the real class from android.jar.
// Copies the signatures (only the members the app uses, same names, types and modifiers) of
// android.text.Editable (API 34); the real interface also extends GetChars, Spannable and
// Appendable, which the app does not use.
package android.text;

public interface Editable extends CharSequence {}
