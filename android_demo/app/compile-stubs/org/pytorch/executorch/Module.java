// Signature-only stand-in for compiling the demo app with javac on a machine without the Android
// SDK (android_demo/app/check.sh); never packaged: the app gets the real class from the Maven
// artifact org.pytorch:executorch-android. Copies the Java-visible signatures of
// org.pytorch.executorch.Module (extension/android/executorch_android/src/main/java/org/pytorch/
// executorch/Module.kt, ExecuTorch 1.5: Kotlin, @JvmStatic/@JvmOverloads load, vararg execute).
package org.pytorch.executorch;

public class Module implements java.io.Closeable {
  public static final int LOAD_MODE_FILE = 0;
  public static final int LOAD_MODE_MMAP = 1;
  public static final int LOAD_MODE_MMAP_USE_MLOCK = 2;
  public static final int LOAD_MODE_MMAP_USE_MLOCK_IGNORE_ERRORS = 3;

  private Module() {}

  public static Module load(String modelPath) {
    throw new UnsupportedOperationException("stub");
  }

  public static Module load(String modelPath, int loadMode) {
    throw new UnsupportedOperationException("stub");
  }

  public static Module load(String modelPath, int loadMode, int numThreads) {
    throw new UnsupportedOperationException("stub");
  }

  public EValue[] forward(EValue... inputs) {
    throw new UnsupportedOperationException("stub");
  }

  public EValue[] execute(String methodName, EValue... inputs) {
    throw new UnsupportedOperationException("stub");
  }

  public void loadMethod(String methodName) {
    throw new UnsupportedOperationException("stub");
  }

  public String[] getMethods() {
    throw new UnsupportedOperationException("stub");
  }

  public void destroy() {
    throw new UnsupportedOperationException("stub");
  }

  @Override
  public void close() {
    throw new UnsupportedOperationException("stub");
  }
}
