package dev.ponder.core.offload;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.Arrays;
import java.util.Map;

/**
 * A named tensor as the Open Inference Protocol carries it: its datatype ("FP32", "UINT8",
 * "INT64", ...), its shape, and its elements row-major as little-endian bytes (the binary tensor
 * extension's layout, so a tensor goes on the wire without conversion). The factories copy their
 * arrays; {@link #data()} is the tensor's own array, not a copy.
 */
public record Tensor(String name, String datatype, long[] shape, byte[] data) {
  /** Bytes per element of each datatype the protocol defines (BYTES is not supported). */
  public static final Map<String, Integer> ITEM_SIZES =
      Map.ofEntries(
          Map.entry("BOOL", 1),
          Map.entry("UINT8", 1),
          Map.entry("UINT16", 2),
          Map.entry("UINT32", 4),
          Map.entry("UINT64", 8),
          Map.entry("INT8", 1),
          Map.entry("INT16", 2),
          Map.entry("INT32", 4),
          Map.entry("INT64", 8),
          Map.entry("FP16", 2),
          Map.entry("FP32", 4),
          Map.entry("FP64", 8));

  /** Checks that the datatype is known and that data holds exactly shape's elements. */
  public Tensor {
    if (name == null || name.isEmpty()) {
      throw new IllegalArgumentException("a tensor needs a name");
    }
    Integer size = ITEM_SIZES.get(datatype);
    if (size == null) {
      throw new IllegalArgumentException(
          name + ": datatype " + datatype + " is not one of " + ITEM_SIZES.keySet());
    }
    long count = count(shape);
    if (data.length != count * size) {
      throw new IllegalArgumentException(
          name + ": shape " + Arrays.toString(shape) + " of " + datatype + " needs "
              + count * size + " bytes, got " + data.length);
    }
  }

  /** The number of elements of {@code shape}; IllegalArgumentException for a negative size. */
  public static long count(long[] shape) {
    long count = 1;
    for (long d : shape) {
      if (d < 0) {
        throw new IllegalArgumentException("shape " + Arrays.toString(shape) + " has a size < 0");
      }
      count = Math.multiplyExact(count, d);
    }
    return count;
  }

  /** The number of elements. */
  public long count() {
    return count(shape);
  }

  /** FP32 elements; no shape: one dimension. */
  public static Tensor fp32(String name, float[] values, long... shape) {
    ByteBuffer b = buffer(values.length * 4L);
    b.asFloatBuffer().put(values);
    return new Tensor(name, "FP32", shapeOr(shape, values.length), b.array());
  }

  /** FP64 elements; no shape: one dimension. */
  public static Tensor fp64(String name, double[] values, long... shape) {
    ByteBuffer b = buffer(values.length * 8L);
    b.asDoubleBuffer().put(values);
    return new Tensor(name, "FP64", shapeOr(shape, values.length), b.array());
  }

  /** UINT8 elements (Java's signed bytes, read as 0..255); no shape: one dimension. */
  public static Tensor uint8(String name, byte[] values, long... shape) {
    return new Tensor(name, "UINT8", shapeOr(shape, values.length), values.clone());
  }

  /** INT8 elements; no shape: one dimension. */
  public static Tensor int8(String name, byte[] values, long... shape) {
    return new Tensor(name, "INT8", shapeOr(shape, values.length), values.clone());
  }

  /** INT32 elements; no shape: one dimension. */
  public static Tensor int32(String name, int[] values, long... shape) {
    ByteBuffer b = buffer(values.length * 4L);
    b.asIntBuffer().put(values);
    return new Tensor(name, "INT32", shapeOr(shape, values.length), b.array());
  }

  /** INT64 elements; no shape: one dimension. */
  public static Tensor int64(String name, long[] values, long... shape) {
    ByteBuffer b = buffer(values.length * 8L);
    b.asLongBuffer().put(values);
    return new Tensor(name, "INT64", shapeOr(shape, values.length), b.array());
  }

  /** BOOL elements (one byte each, 0 or 1); no shape: one dimension. */
  public static Tensor bool(String name, boolean[] values, long... shape) {
    byte[] data = new byte[values.length];
    for (int i = 0; i < values.length; i++) {
      data[i] = (byte) (values[i] ? 1 : 0);
    }
    return new Tensor(name, "BOOL", shapeOr(shape, values.length), data);
  }

  /** FP16 elements given as their IEEE half-precision bit patterns; no shape: one dimension. */
  public static Tensor fp16Bits(String name, short[] bits, long... shape) {
    ByteBuffer b = buffer(bits.length * 2L);
    b.asShortBuffer().put(bits);
    return new Tensor(name, "FP16", shapeOr(shape, bits.length), b.array());
  }

  /** The elements of an FP32, FP64 or FP16 tensor as floats (FP64 rounded to float). */
  public float[] floats() {
    ByteBuffer b = read();
    float[] out = new float[(int) count()];
    switch (datatype) {
      case "FP32" -> b.asFloatBuffer().get(out);
      case "FP64" -> {
        for (int i = 0; i < out.length; i++) {
          out[i] = (float) b.getDouble(8 * i);
        }
      }
      case "FP16" -> {
        for (int i = 0; i < out.length; i++) {
          out[i] = halfToFloat(b.getShort(2 * i));
        }
      }
      default -> throw wrongType("floats()", "FP32, FP64 or FP16");
    }
    return out;
  }

  /** The elements of an FP64 tensor. */
  public double[] doubles() {
    require("FP64", "doubles()");
    double[] out = new double[(int) count()];
    read().asDoubleBuffer().get(out);
    return out;
  }

  /** The elements of an INT64 tensor. */
  public long[] longs() {
    require("INT64", "longs()");
    long[] out = new long[(int) count()];
    read().asLongBuffer().get(out);
    return out;
  }

  /** The elements of an INT32 tensor. */
  public int[] ints() {
    require("INT32", "ints()");
    int[] out = new int[(int) count()];
    read().asIntBuffer().get(out);
    return out;
  }

  /** The elements of a BOOL tensor. */
  public boolean[] bools() {
    require("BOOL", "bools()");
    boolean[] out = new boolean[data.length];
    for (int i = 0; i < data.length; i++) {
      out[i] = data[i] != 0;
    }
    return out;
  }

  /** A float matrix [rows][columns] of a 2-D floating-point tensor (logits [N, C]). */
  public float[][] matrix() {
    if (shape.length != 2) {
      throw new IllegalStateException(
          name + " has shape " + Arrays.toString(shape) + "; a matrix has two dimensions");
    }
    float[] flat = floats();
    int rows = (int) shape[0];
    int columns = (int) shape[1];
    float[][] out = new float[rows][];
    for (int r = 0; r < rows; r++) {
      out[r] = Arrays.copyOfRange(flat, r * columns, (r + 1) * columns);
    }
    return out;
  }

  /** The data's size in bytes. */
  public int byteSize() {
    return data.length;
  }

  @Override
  public boolean equals(Object other) {
    return other instanceof Tensor t
        && name.equals(t.name)
        && datatype.equals(t.datatype)
        && Arrays.equals(shape, t.shape)
        && Arrays.equals(data, t.data);
  }

  @Override
  public int hashCode() {
    return 31 * (31 * name.hashCode() + Arrays.hashCode(shape)) + Arrays.hashCode(data);
  }

  @Override
  public String toString() {
    return "Tensor[" + name + ", " + datatype + " " + Arrays.toString(shape) + "]";
  }

  /** IEEE 754 half precision bits to float (exact: every half is a float). */
  static float halfToFloat(short bits) {
    int sign = (bits & 0x8000) << 16;
    int exponent = (bits >>> 10) & 0x1f;
    int mantissa = bits & 0x3ff;
    if (exponent == 0x1f) {
      return Float.intBitsToFloat(sign | 0x7f800000 | (mantissa << 13));
    }
    if (exponent == 0) {
      float value = mantissa * 0x1p-24f; // subnormal or zero
      return sign != 0 ? -value : value;
    }
    return Float.intBitsToFloat(sign | ((exponent + 112) << 23) | (mantissa << 13));
  }

  private static long[] shapeOr(long[] shape, int length) {
    return shape.length == 0 ? new long[] {length} : shape.clone();
  }

  private static ByteBuffer buffer(long bytes) {
    if (bytes > Integer.MAX_VALUE) {
      throw new IllegalArgumentException("a tensor of " + bytes + " bytes is over 2 GiB");
    }
    return ByteBuffer.allocate((int) bytes).order(ByteOrder.LITTLE_ENDIAN);
  }

  private ByteBuffer read() {
    return ByteBuffer.wrap(data).order(ByteOrder.LITTLE_ENDIAN);
  }

  private void require(String wanted, String accessor) {
    if (!datatype.equals(wanted)) {
      throw wrongType(accessor, wanted);
    }
  }

  private IllegalStateException wrongType(String accessor, String wanted) {
    return new IllegalStateException(
        name + " is " + datatype + "; " + accessor + " reads " + wanted + " tensors");
  }
}
