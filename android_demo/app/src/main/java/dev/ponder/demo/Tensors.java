package dev.ponder.demo;

import dev.ponder.core.Npz;
import org.pytorch.executorch.EValue;
import org.pytorch.executorch.Tensor;

/** Between numpy arrays (the bundle's samples), ExecuTorch tensors and plain Java arrays. */
final class Tensors {
  private Tensors() {}

  static EValue of(Npz.Array a) {
    long[] shape = a.shape();
    Tensor t =
        switch (a.dtype()) {
          case "float32" -> Tensor.fromBlob(a.floats(), shape);
          case "int64" -> Tensor.fromBlob(a.longs(), shape);
          case "int32" -> Tensor.fromBlob(a.ints(), shape);
          default -> throw new IllegalArgumentException(
              "sample input '" + a.name + "' is " + a.dtype() + "; the app feeds float32, int64 or int32");
        };
    return EValue.from(t);
  }

  /** The MoE gate's tau, as the stages take it: float32 [1]. */
  static EValue tau(double tau) {
    return EValue.from(Tensor.fromBlob(new float[] {(float) tau}, new long[] {1}));
  }

  static float[] floats(EValue v) {
    return v.toTensor().getDataAsFloatArray();
  }

  static long[] shape(EValue v) {
    return v.toTensor().shape();
  }
}
