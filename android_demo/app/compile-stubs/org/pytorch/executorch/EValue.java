// Signature-only stand-in for compiling the demo app with javac on a machine without the Android
// SDK (android_demo/app/check.sh); never packaged: the app gets the real class from the Maven
// artifact org.pytorch:executorch-android. Copies the Java-visible signatures of
// org.pytorch.executorch.EValue (.../org/pytorch/executorch/EValue.kt, ExecuTorch 1.5).
package org.pytorch.executorch;

public final class EValue {
  private EValue() {}

  public static EValue optionalNone() {
    throw new UnsupportedOperationException("stub");
  }

  public static EValue from(Tensor tensor) {
    throw new UnsupportedOperationException("stub");
  }

  public static EValue from(boolean value) {
    throw new UnsupportedOperationException("stub");
  }

  public static EValue from(long value) {
    throw new UnsupportedOperationException("stub");
  }

  public static EValue from(double value) {
    throw new UnsupportedOperationException("stub");
  }

  public static EValue from(String value) {
    throw new UnsupportedOperationException("stub");
  }

  public boolean isNone() {
    throw new UnsupportedOperationException("stub");
  }

  public boolean isTensor() {
    throw new UnsupportedOperationException("stub");
  }

  public Tensor toTensor() {
    throw new UnsupportedOperationException("stub");
  }

  public long toInt() {
    throw new UnsupportedOperationException("stub");
  }

  public double toDouble() {
    throw new UnsupportedOperationException("stub");
  }
}
