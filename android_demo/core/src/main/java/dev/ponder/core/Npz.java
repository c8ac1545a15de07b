package dev.ponder.core;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Collections;
import java.util.Enumeration;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.zip.ZipEntry;
import java.util.zip.ZipFile;

/**
 * Reads numpy's {@code .npz} (a zip of {@code .npy} files, stored or deflated, as
 * {@code np.savez} and {@code np.savez_compressed} write them) and {@code .npy}: the bundle's
 * {@code samples.npz}. Little-endian float32, int64 and int32 arrays in C order are read; an
 * array of any other dtype or layout is kept by name and shape and says so when its data is
 * asked for, so that one such array does not stop the others from being read.
 */
public final class Npz {
  private Npz() {}

  private static final byte[] MAGIC = {(byte) 0x93, 'N', 'U', 'M', 'P', 'Y'};
  private static final Pattern DESCR = Pattern.compile("'descr'\\s*:\\s*'([^']*)'");
  private static final Pattern FORTRAN = Pattern.compile("'fortran_order'\\s*:\\s*(True|False)");
  private static final Pattern SHAPE = Pattern.compile("'shape'\\s*:\\s*\\(([^)]*)\\)");

  /**
   * One array: its numpy dtype string ({@code "<f4"}), shape, and data, which is one of
   * {@code float[]}, {@code long[]}, {@code int[]}, or null where the dtype is not read
   * ({@code unsupported} says why).
   */
  public static final class Array {
    public final String name;
    public final String descr;
    private final long[] shape;
    private final Object data;
    private final String unsupported;

    Array(String name, String descr, long[] shape, Object data, String unsupported) {
      this.name = name;
      this.descr = descr;
      this.shape = shape;
      this.data = data;
      this.unsupported = unsupported;
    }

    /** The shape; {@code []} for a 0-d array. */
    public long[] shape() {
      return shape.clone();
    }

    /** Number of elements. */
    public long size() {
      return count(shape);
    }

    /** "float32", "int64", "int32", or numpy's descr where the data was not read. */
    public String dtype() {
      if (data instanceof float[]) {
        return "float32";
      }
      if (data instanceof long[]) {
        return "int64";
      }
      if (data instanceof int[]) {
        return "int32";
      }
      return descr;
    }

    public float[] floats() {
      return (float[]) data("float32", float[].class);
    }

    public long[] longs() {
      return (long[]) data("int64", long[].class);
    }

    public int[] ints() {
      return (int[]) data("int32", int[].class);
    }

    /**
     * Row {@code i} of the first dimension as an array of shape {@code [1, ...rest]}: one sample
     * of a batched input, ready to be a batch of one.
     */
    public Array row(int i) {
      if (data == null) {
        throw new UnsupportedOperationException(unsupportedMessage());
      }
      if (shape.length == 0) {
        throw new IllegalArgumentException("array '" + name + "' is 0-d: it has no rows");
      }
      if (i < 0 || i >= shape[0]) {
        throw new IndexOutOfBoundsException(
            "row " + i + " of array '" + name + "', which has " + shape[0] + " rows");
      }
      long[] rowShape = shape.clone();
      rowShape[0] = 1;
      int width = (int) count(rowShape);
      int from = i * width;
      Object slice;
      if (data instanceof float[]) {
        slice = Arrays.copyOfRange((float[]) data, from, from + width);
      } else if (data instanceof long[]) {
        slice = Arrays.copyOfRange((long[]) data, from, from + width);
      } else {
        slice = Arrays.copyOfRange((int[]) data, from, from + width);
      }
      return new Array(name, descr, rowShape, slice, null);
    }

    private Object data(String dtype, Class<?> type) {
      if (data == null) {
        throw new UnsupportedOperationException(unsupportedMessage());
      }
      if (!type.isInstance(data)) {
        throw new IllegalStateException("array '" + name + "' is " + dtype() + ", not " + dtype);
      }
      return data;
    }

    private String unsupportedMessage() {
      return "array '" + name + "' (" + descr + ") is not read: " + unsupported;
    }

    @Override
    public String toString() {
      return name + ": " + dtype() + " " + Arrays.toString(shape);
    }
  }

  /** Every array of the {@code .npz} at {@code file}, by name (without ".npy"), in file order. */
  public static Map<String, Array> read(Path file) throws IOException {
    Map<String, Array> arrays = new LinkedHashMap<>();
    try (ZipFile zip = new ZipFile(file.toFile())) {
      Enumeration<? extends ZipEntry> entries = zip.entries();
      while (entries.hasMoreElements()) {
        ZipEntry entry = entries.nextElement();
        if (entry.isDirectory()) {
          continue;
        }
        String name = entry.getName();
        if (name.endsWith(".npy")) {
          name = name.substring(0, name.length() - 4);
        }
        try (InputStream in = zip.getInputStream(entry)) {
          arrays.put(name, readNpy(name, readAll(in)));
        }
      }
    } catch (java.util.zip.ZipException e) {
      throw new IOException(file + " is not an .npz file (" + e.getMessage() + ")", e);
    }
    return Collections.unmodifiableMap(arrays);
  }

  /** One {@code .npy} file's bytes, as array {@code name}. */
  public static Array readNpy(String name, byte[] bytes) throws IOException {
    ByteBuffer buf = ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN);
    for (byte b : MAGIC) {
      if (buf.remaining() == 0 || buf.get() != b) {
        throw new IOException("'" + name + "' is not a .npy array (no \\x93NUMPY magic)");
      }
    }
    if (buf.remaining() < 2) {
      throw new IOException("'" + name + "': the .npy header is cut short");
    }
    int major = buf.get() & 0xff;
    buf.get(); // minor
    long headerLength;
    if (major == 1) {
      headerLength = buf.remaining() >= 2 ? buf.getShort() & 0xffff : -1;
    } else if (major == 2 || major == 3) {
      headerLength = buf.remaining() >= 4 ? buf.getInt() & 0xffffffffL : -1;
    } else {
      throw new IOException("'" + name + "': .npy format version " + major + " is not read");
    }
    if (headerLength < 0 || headerLength > buf.remaining()) {
      throw new IOException("'" + name + "': the .npy header is cut short");
    }
    byte[] headerBytes = new byte[(int) headerLength];
    buf.get(headerBytes);
    String header =
        new String(headerBytes, major == 3 ? StandardCharsets.UTF_8 : StandardCharsets.ISO_8859_1);
    String descr = group(DESCR, header, name, "descr");
    boolean fortran = "True".equals(group(FORTRAN, header, name, "fortran_order"));
    long[] shape = parseShape(group(SHAPE, header, name, "shape"), name);
    long n = count(shape);
    String why = null;
    int itemSize;
    switch (descr) {
      case "<f4", "<i4" -> itemSize = 4;
      case "<i8" -> itemSize = 8;
      default -> {
        itemSize = 0;
        why = "only little-endian float32 (<f4), int64 (<i8) and int32 (<i4) are read";
      }
    }
    if (why == null && fortran && shape.length > 1) {
      why = "it is stored in Fortran order; save it C-contiguous (np.ascontiguousarray)";
    }
    if (why != null) {
      return new Array(name, descr, shape, null, why);
    }
    if (n > Integer.MAX_VALUE || n * itemSize > buf.remaining()) {
      throw new IOException(
          "'" + name + "' says " + n + " elements of " + descr + " but holds "
              + buf.remaining() + " bytes");
    }
    int size = (int) n;
    Object data;
    switch (descr) {
      case "<f4" -> {
        float[] f = new float[size];
        buf.asFloatBuffer().get(f);
        data = f;
      }
      case "<i8" -> {
        long[] l = new long[size];
        buf.asLongBuffer().get(l);
        data = l;
      }
      default -> {
        int[] i = new int[size];
        buf.asIntBuffer().get(i);
        data = i;
      }
    }
    return new Array(name, descr, shape, data, null);
  }

  private static String group(Pattern pattern, String header, String name, String key)
      throws IOException {
    Matcher m = pattern.matcher(header);
    if (!m.find()) {
      throw new IOException("'" + name + "': the .npy header has no " + key + ": " + header.trim());
    }
    return m.group(1);
  }

  private static long[] parseShape(String text, String name) throws IOException {
    String[] parts = text.split(",");
    long[] dims = new long[parts.length];
    int n = 0;
    for (String part : parts) {
      String p = part.trim();
      if (p.isEmpty()) {
        continue; // "(3,)" and "()"
      }
      try {
        dims[n++] = Long.parseLong(p.endsWith("L") ? p.substring(0, p.length() - 1) : p);
      } catch (NumberFormatException e) {
        throw new IOException("'" + name + "': shape (" + text + ") is not a tuple of integers", e);
      }
    }
    return Arrays.copyOf(dims, n);
  }

  private static long count(long[] shape) {
    long n = 1;
    for (long d : shape) {
      n *= d;
    }
    return n;
  }

  private static byte[] readAll(InputStream in) throws IOException {
    ByteArrayOutputStream out = new ByteArrayOutputStream();
    byte[] buffer = new byte[1 << 16];
    int n;
    while ((n = in.read(buffer)) > 0) {
      out.write(buffer, 0, n);
    }
    return out.toByteArray();
  }
}
