package dev.ponder.core.offload;

import dev.ponder.core.Json;
import java.io.ByteArrayOutputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.zip.CRC32;

/**
 * The device half's payloads, byte for byte as ponder's Python writes them with zstd off
 * (runtime/_offload/split.py {@code select_tokens} and {@code SplitBundle.send},
 * runtime/_offload/payload.py {@code encode_payload(..., zstd_level=None)},
 * runtime/_offload/codecs.py): per sample, the pooling token and the top-scored other real
 * tokens ({@code ceil(keep * n)} in all, in position order), their hidden states through a codec
 * (fp32, fp16, int8, int4, int4-g32), the kept positions as a raw uint8/uint16 tensor "index"
 * when keep &lt; 1, and the split's params plus keep and codec in the header. Java has no zstd, so
 * the body always goes uncompressed ({@code "zstd_level":null}); the Python receiver accepts it.
 */
public final class Payloads {
  /** The codecs this class writes, as codecs.py names them. */
  public static final List<String> CODECS = List.of("fp32", "fp16", "int8", "int4", "int4-g32");

  static final byte[] MAGIC = {'P', 'N', 'D', 'P'};
  static final int VERSION = 1;
  static final int PREFIX = 20;
  private static final float FP16_MAX = 65504f;

  private Payloads() {}

  /**
   * One sample's kept token positions, in position order: its pooling token ({@code anchor}
   * "first": position 0; "last": its last real token) and the top-scored other real tokens,
   * {@code min(max(ceil(n * keep), 1), max(n, 1))} in all for n real tokens. Ties go to the
   * earlier position (numpy's stable argsort), as select_tokens does.
   *
   * @param scores one score per token (length T)
   * @param real whether each token is real, not padding (length T); null: all real
   */
  public static int[] selectTokens(float[] scores, boolean[] real, double keep, String anchor) {
    int t = scores.length;
    if (real == null) {
      real = new boolean[t];
      Arrays.fill(real, true);
    }
    if (real.length != t) {
      throw new IllegalArgumentException(
          "scores has " + t + " tokens, real has " + real.length);
    }
    if (!"first".equals(anchor) && !"last".equals(anchor)) {
      throw new IllegalArgumentException("anchor must be 'first' or 'last', got " + anchor);
    }
    int count = 0;
    int lastReal = -1;
    for (int i = 0; i < t; i++) {
      if (real[i]) {
        count++;
        lastReal = i;
      }
    }
    int wanted = (int) Math.min(Math.max((long) Math.ceil(count * keep), 1), Math.max(count, 1));
    // the key numpy sorts ascending: -score, -inf for padding, the anchor first
    float[] key = new float[t];
    for (int i = 0; i < t; i++) {
      key[i] = real[i] ? -scores[i] : Float.POSITIVE_INFINITY;
    }
    int anchorAt = "last".equals(anchor) ? Math.max(lastReal, 0) : 0;
    if (t > 0) {
      key[anchorAt] = Float.NEGATIVE_INFINITY;
    }
    Integer[] byKey = new Integer[t];
    for (int i = 0; i < t; i++) {
      byKey[i] = i;
    }
    Arrays.sort(byKey, (a, b) -> compareLikeNumpy(key[a], key[b])); // stable
    boolean[] chosen = new boolean[t];
    for (int r = 0; r < Math.min(wanted, t); r++) {
      int i = byKey[r];
      chosen[i] = real[i] || count == 0;
    }
    // chosen first, then padding, then the other real tokens; each in position order
    int[] order = new int[t];
    int n = 0;
    for (int group = 0; group < 3; group++) {
      for (int i = 0; i < t; i++) {
        int g = chosen[i] ? 0 : real[i] ? 2 : 1;
        if (g == group) {
          order[n++] = i;
        }
      }
    }
    return Arrays.copyOf(order, Math.min(wanted, t));
  }

  /** numpy's sort order for floats: NaN last, -0.0 equal to 0.0. */
  private static int compareLikeNumpy(float a, float b) {
    if (Float.isNaN(a) || Float.isNaN(b)) {
      return Float.isNaN(a) ? (Float.isNaN(b) ? 0 : 1) : -1;
    }
    return a < b ? -1 : a > b ? 1 : 0;
  }

  /**
   * What a payload carries as params, as {@code SplitBundle.params}: the split's params (from
   * split.json's "split"."params", in their order) with "keep" and "codec" set.
   */
  public static Map<String, Object> params(Map<String, ?> splitParams, double keep, String codec) {
    Map<String, Object> out = new LinkedHashMap<>(splitParams);
    out.put("keep", keep);
    out.put("codec", codec);
    return out;
  }

  /**
   * The device side after the device half, as {@code SplitBundle.send}: one payload per sample.
   *
   * @param hidden the device half's hidden state [batch, tokens, width], row-major
   * @param scores its per-token selection scores [batch, tokens] (read only when keep &lt; 1)
   * @param mask the attention mask [batch, tokens] (nonzero: real), or null: all tokens real
   * @param anchor split.json's "split"."anchor"
   * @param splitParams split.json's "split"."params"
   */
  public static List<byte[]> send(float[] hidden, float[] scores, long[] mask, int batch,
      int tokens, int width, double keep, String codec, String anchor,
      Map<String, ?> splitParams) {
    if (!(keep > 0 && keep <= 1)) {
      throw new IllegalArgumentException("keep must be in (0, 1], got " + keep);
    }
    requireCodec(codec);
    long cells = (long) batch * tokens;
    if (hidden.length != cells * width || (mask != null && mask.length != cells)
        || (keep < 1 && scores.length != cells)) {
      throw new IllegalArgumentException("hidden needs " + cells * width + " values (has "
          + hidden.length + "), scores and mask " + cells + " each");
    }
    Map<String, Object> params = params(splitParams, keep, codec);
    List<byte[]> out = new ArrayList<>();
    for (int b = 0; b < batch; b++) {
      boolean[] real = new boolean[tokens];
      float[] score = new float[tokens];
      for (int i = 0; i < tokens; i++) {
        real[i] = mask == null || mask[b * tokens + i] != 0;
        score[i] = keep < 1 ? scores[b * tokens + i] : (real[i] ? 1f : 0f);
      }
      int[] positions = selectTokens(score, real, keep < 1 ? keep : 1.0, anchor);
      float[] kept = new float[positions.length * width];
      for (int k = 0; k < positions.length; k++) {
        System.arraycopy(hidden, (b * tokens + positions[k]) * width, kept, k * width, width);
      }
      out.add(encode(kept, positions.length, width, codec, keep < 1 ? positions : null, params));
    }
    return out;
  }

  /**
   * One payload, as {@code encode_payload({"tokens": x}, codec, extra={"index": positions},
   * params=params, zstd_level=None)} with x [1, count, width]: the tokens through {@code codec},
   * then (unless null) the kept positions as a raw tensor "index" in the smallest unsigned dtype
   * that holds them.
   */
  public static byte[] encode(float[] tokens, int count, int width, String codec, int[] index,
      Map<String, ?> params) {
    requireCodec(codec);
    if (width < 1 || tokens.length != (long) count * width) {
      throw new IllegalArgumentException(
          "tokens [" + count + ", " + width + "] need " + (long) count * width + " values, got "
              + tokens.length);
    }
    for (float v : tokens) {
      if (!Float.isFinite(v)) {
        throw new IllegalArgumentException(
            "activations to encode hold NaN or infinity; nothing can be sent");
      }
    }
    List<Object> tensors = new ArrayList<>();
    ByteArrayOutputStream body = new ByteArrayOutputStream();
    List<Object> parts = new ArrayList<>();
    long[] shape = {1, count, width};
    long[] rows = {1, count};
    switch (codec) {
      case "fp32" -> part(parts, body, "values", "float32", shape, float32(tokens));
      case "fp16" -> {
        short[] half = new short[tokens.length];
        for (int i = 0; i < half.length; i++) {
          half[i] = floatToHalf(Math.max(-FP16_MAX, Math.min(FP16_MAX, tokens[i])));
        }
        part(parts, body, "values", "float16", shape, le16(half));
      }
      case "int8" -> {
        byte[] codes = new byte[tokens.length];
        float[] scales = new float[count];
        for (int r = 0; r < count; r++) {
          scales[r] = symmetric(tokens, r * width, width, 127, codes);
        }
        part(parts, body, "codes", "int8", shape, codes);
        part(parts, body, "scales", "float32", rows, float32(scales));
      }
      case "int4" -> {
        byte[] codes = new byte[tokens.length];
        float[] scales = new float[count];
        for (int r = 0; r < count; r++) {
          scales[r] = symmetric(tokens, r * width, width, 7, codes);
        }
        part(parts, body, "codes", "uint8", new long[] {1, count, (width + 1) / 2},
            pack4(codes, count, width));
        part(parts, body, "scales", "float32", rows, float32(scales));
      }
      default -> { // int4-g32
        int group = 32;
        int groups = (width + group - 1) / group;
        byte[] codes = new byte[tokens.length];
        short[] scales = new short[count * groups];
        for (int r = 0; r < count; r++) {
          for (int g = 0; g < groups; g++) {
            int from = r * width + g * group;
            int n = Math.min(group, width - g * group);
            scales[r * groups + g] = groupScale(tokens, from, n, codes);
          }
        }
        part(parts, body, "codes", "uint8", new long[] {1, count, (width + 1) / 2},
            pack4(codes, count, width));
        part(parts, body, "scales", "float16", new long[] {1, count, groups}, le16(scales));
      }
    }
    tensors.add(tensor("tokens", codec, shape, parts));
    if (index != null) {
      int top = 0;
      for (int p : index) {
        if (p < 0) {
          throw new IllegalArgumentException("a kept position is negative: " + p);
        }
        top = Math.max(top, p);
      }
      List<Object> indexParts = new ArrayList<>();
      long[] indexShape = {index.length};
      if (top < 256) {
        byte[] values = new byte[index.length];
        for (int i = 0; i < index.length; i++) {
          values[i] = (byte) index[i];
        }
        part(indexParts, body, "values", "uint8", indexShape, values);
      } else if (top < 65536) {
        short[] values = new short[index.length];
        for (int i = 0; i < index.length; i++) {
          values[i] = (short) index[i];
        }
        part(indexParts, body, "values", "uint16", indexShape, le16(values));
      } else {
        throw new IllegalArgumentException(
            "kept positions up to " + top + " need uint32, which a payload does not carry");
      }
      tensors.add(tensor("index", "raw", indexShape, indexParts));
    }
    byte[] bodyBytes = body.toByteArray();
    Map<String, Object> header = new LinkedHashMap<>();
    header.put("params", params == null ? Map.of() : params);
    header.put("body_nbytes", bodyBytes.length);
    header.put("zstd_level", null);
    header.put("tensors", tensors);
    byte[] head = Json.python(header).getBytes(StandardCharsets.US_ASCII);
    CRC32 crc = new CRC32();
    crc.update(head);
    crc.update(bodyBytes);
    ByteBuffer out = ByteBuffer.allocate(PREFIX + head.length + bodyBytes.length)
        .order(ByteOrder.LITTLE_ENDIAN);
    out.put(MAGIC).putShort((short) VERSION).putShort((short) 0).putInt(head.length)
        .putInt(bodyBytes.length).putInt((int) crc.getValue()).put(head).put(bodyBytes);
    return out.array();
  }

  private static void requireCodec(String codec) {
    if (!CODECS.contains(codec)) {
      throw new IllegalArgumentException("codec " + codec + " is not one of " + CODECS);
    }
  }

  /**
   * codecs.py's {@code _symmetric} over one row: scale = peak / levels (float32), codes =
   * clip(rint(x / scale)) (0 for an all-zero row, whose scale is 0). Returns the scale.
   */
  private static float symmetric(float[] x, int from, int n, int levels, byte[] codes) {
    float peak = 0f;
    for (int i = from; i < from + n; i++) {
      peak = Math.max(peak, Math.abs(x[i]));
    }
    float scale = peak / levels;
    float safe = scale > 0 ? scale : 1f;
    for (int i = from; i < from + n; i++) {
      codes[i] = (byte) Math.max(-levels, Math.min(levels, Math.rint(x[i] / safe)));
    }
    return scale;
  }

  /**
   * int4-g32's float16 scale of one group (rounded up one step when rounding to float16 made it
   * too small for the peak), and the group's codes. Returns the scale's float16 bits.
   */
  private static short groupScale(float[] x, int from, int n, byte[] codes) {
    float peak = 0f; // the padding past the width is zeros: no effect on the peak
    for (int i = from; i < from + n; i++) {
      peak = Math.max(peak, Math.abs(x[i]));
    }
    short bits = floatToHalf(Math.min(peak / 7, FP16_MAX));
    if (Tensor.halfToFloat(bits) * 7 < peak) {
      bits++; // nextafter towards +inf: the scale is >= 0
    }
    float scale = Tensor.halfToFloat(bits);
    float safe = scale > 0 ? scale : 1f;
    for (int i = from; i < from + n; i++) {
      codes[i] = (byte) Math.max(-7, Math.min(7, Math.rint(x[i] / safe)));
    }
    return bits;
  }

  /** int4 codes in [-7, 7] [rows, width] to bytes [rows, ceil(width / 2)], low nibble first. */
  private static byte[] pack4(byte[] codes, int rows, int width) {
    int packed = (width + 1) / 2;
    byte[] out = new byte[rows * packed];
    for (int r = 0; r < rows; r++) {
      for (int j = 0; j < packed; j++) {
        int low = codes[r * width + 2 * j] + 8;
        int high = 2 * j + 1 < width ? codes[r * width + 2 * j + 1] + 8 : 8;
        out[r * packed + j] = (byte) (low | (high << 4));
      }
    }
    return out;
  }

  /**
   * IEEE 754 float to half precision bits, rounding to nearest, ties to even (as numpy's
   * {@code astype(np.float16)}); beyond the half range: infinity; NaN stays NaN.
   */
  public static short floatToHalf(float f) {
    int bits = Float.floatToRawIntBits(f);
    int sign = (bits >>> 16) & 0x8000;
    int abs = bits & 0x7fffffff;
    if (abs >= 0x7f800000) { // infinity or NaN
      return (short) (sign | 0x7c00 | (abs > 0x7f800000 ? 0x200 : 0));
    }
    int exponent = abs >>> 23;
    int h;
    int rest;
    int halfway;
    if (exponent >= 113) { // a normal half (or an overflow, which the rounding carries to inf)
      if (exponent > 142) {
        return (short) (sign | 0x7c00);
      }
      h = ((exponent - 112) << 10) | ((abs & 0x7fffff) >>> 13);
      rest = abs & 0x1fff;
      halfway = 0x1000;
    } else if (exponent >= 102) { // a subnormal half: units of 2^-24
      int mantissa = (abs & 0x7fffff) | 0x800000;
      int shift = 126 - exponent; // 14..24
      h = mantissa >>> shift;
      rest = mantissa & ((1 << shift) - 1);
      halfway = 1 << (shift - 1);
    } else { // under 2^-25: rounds to zero
      return (short) sign;
    }
    if (rest > halfway || (rest == halfway && (h & 1) != 0)) {
      h++; // may carry into the exponent: still the right half (up to infinity)
    }
    return (short) (sign | h);
  }

  private static Map<String, Object> tensor(String name, String codec, long[] shape,
      List<Object> parts) {
    Map<String, Object> t = new LinkedHashMap<>();
    t.put("name", name);
    t.put("codec", codec);
    t.put("shape", list(shape));
    t.put("parts", parts);
    return t;
  }

  private static void part(List<Object> parts, ByteArrayOutputStream body, String name,
      String dtype, long[] shape, byte[] data) {
    Map<String, Object> p = new LinkedHashMap<>();
    p.put("name", name);
    p.put("dtype", dtype);
    p.put("shape", list(shape));
    p.put("offset", body.size());
    parts.add(p);
    body.writeBytes(data);
  }

  private static List<Object> list(long[] shape) {
    List<Object> out = new ArrayList<>();
    for (long d : shape) {
      out.add(d);
    }
    return out;
  }

  private static byte[] float32(float[] values) {
    ByteBuffer b = ByteBuffer.allocate(values.length * 4).order(ByteOrder.LITTLE_ENDIAN);
    b.asFloatBuffer().put(values);
    return b.array();
  }

  /** 16-bit values (float16 bits, uint16) as little-endian bytes. */
  private static byte[] le16(short[] values) {
    ByteBuffer b = ByteBuffer.allocate(values.length * 2).order(ByteOrder.LITTLE_ENDIAN);
    b.asShortBuffer().put(values);
    return b.array();
  }
}
