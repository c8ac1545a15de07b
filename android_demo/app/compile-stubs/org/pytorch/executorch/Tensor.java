// Signature-only stand-in for compiling the demo app with javac on a machine without the Android
// SDK (android_demo/app/check.sh); never packaged: the app gets the real class from the Maven
// artifact org.pytorch:executorch-android. Copies the Java-visible signatures of
// org.pytorch.executorch.Tensor (.../org/pytorch/executorch/Tensor.kt, ExecuTorch 1.5: the
// companion's @JvmStatic fromBlob overloads, the dataAs* properties seen from Java as getters).
package org.pytorch.executorch;

public abstract class Tensor {
  Tensor() {}

  public static Tensor fromBlob(float[] data, long[] shape) {
    throw new UnsupportedOperationException("stub");
  }

  public static Tensor fromBlob(long[] data, long[] shape) {
    throw new UnsupportedOperationException("stub");
  }

  public static Tensor fromBlob(int[] data, long[] shape) {
    throw new UnsupportedOperationException("stub");
  }

  public long numel() {
    throw new UnsupportedOperationException("stub");
  }

  public long[] shape() {
    throw new UnsupportedOperationException("stub");
  }

  public float[] getDataAsFloatArray() {
    throw new UnsupportedOperationException("stub");
  }

  public long[] getDataAsLongArray() {
    throw new UnsupportedOperationException("stub");
  }

  public int[] getDataAsIntArray() {
    throw new UnsupportedOperationException("stub");
  }
}
