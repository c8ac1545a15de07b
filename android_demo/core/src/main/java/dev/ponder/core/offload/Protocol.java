package dev.ponder.core.offload;

import dev.ponder.core.Json;
import java.io.ByteArrayOutputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * Open Inference Protocol (KServe v2) bodies as ponder's runtime/_serve/protocol.py writes and
 * reads them: a JSON header, then with the binary tensor extension the raw little-endian bytes of
 * every tensor that declares {@code binary_data_size}, in order; the HTTP header
 * {@value #HEADER_LENGTH} gives the JSON's length. Anything malformed in an answer is an
 * {@link OffloadException} of kind "protocol" that says what is wrong.
 */
final class Protocol {
  static final String HEADER_LENGTH = "Inference-Header-Content-Length";
  /** Per tensor: a shape that asks for more elements is refused before allocating (as Python). */
  static final long MAX_ELEMENTS = 1L << 28;

  private Protocol() {}

  /** A request body and the length of its JSON header. */
  record Body(byte[] bytes, int headerLength) {}

  /** A decoded answer: the model's name, the answer's parameters, its outputs in order. */
  record Response(String modelName, Map<String, Object> parameters, List<Tensor> outputs) {
    /** The output {@code name}, or null. */
    Tensor output(String name) {
      for (Tensor t : outputs) {
        if (t.name().equals(name)) {
          return t;
        }
      }
      return null;
    }
  }

  /**
   * A binary request: every input as binary data, outputs asked for as binary too
   * ({@code binary_data_output}), the request's {@code parameters} beside.
   */
  static Body encodeRequest(List<Tensor> inputs, Map<String, Object> parameters) {
    Map<String, Object> params = new LinkedHashMap<>();
    if (parameters != null) {
      params.putAll(parameters);
    }
    params.put("binary_data_output", Boolean.TRUE);
    List<Object> entries = new ArrayList<>();
    int total = 0;
    for (Tensor t : inputs) {
      Map<String, Object> entry = new LinkedHashMap<>();
      entry.put("name", t.name());
      List<Object> shape = new ArrayList<>();
      for (long d : t.shape()) {
        shape.add(d);
      }
      entry.put("shape", shape);
      entry.put("datatype", t.datatype());
      entry.put("parameters", Map.of("binary_data_size", t.byteSize()));
      entries.add(entry);
      total += t.byteSize();
    }
    Map<String, Object> head = new LinkedHashMap<>();
    head.put("parameters", params);
    head.put("inputs", entries);
    byte[] json = Json.python(head).getBytes(StandardCharsets.UTF_8);
    ByteArrayOutputStream out = new ByteArrayOutputStream(json.length + total);
    out.writeBytes(json);
    for (Tensor t : inputs) {
      out.writeBytes(t.data());
    }
    return new Body(out.toByteArray(), json.length);
  }

  /** Parses an answer body and the value of its {@value #HEADER_LENGTH} header (null: JSON). */
  static Response decodeResponse(byte[] body, String headerLength) throws OffloadException {
    int size = headerSize(headerLength, body.length);
    Object parsed;
    try {
      parsed = Json.parse(new String(body, 0, size, StandardCharsets.UTF_8));
    } catch (IllegalArgumentException e) {
      throw malformed("the JSON header is not valid JSON: " + e.getMessage());
    }
    if (!(parsed instanceof Map<?, ?> head)) {
      throw malformed("the JSON header must be an object");
    }
    if (!(head.get("model_name") instanceof String modelName)) {
      throw malformed("a response names its model ('model_name'), got " + head.get("model_name"));
    }
    if (!(head.get("outputs") instanceof List<?> entries) || entries.isEmpty()) {
      throw malformed("'outputs' must be a non-empty list of tensors");
    }
    int offset = size;
    List<Tensor> outputs = new ArrayList<>();
    Set<String> seen = new HashSet<>();
    for (Object item : entries) {
      if (!(item instanceof Map<?, ?> entry)) {
        throw malformed("an entry of 'outputs' is not an object: " + item);
      }
      if (!(entry.get("name") instanceof String name) || name.isEmpty()) {
        throw malformed("a tensor needs a name: " + clip(Json.canonical(entry)));
      }
      if (!seen.add(name)) {
        throw malformed("tensor '" + name + "' is given twice");
      }
      long[] shape = shape(entry, name);
      Object datatype = entry.get("datatype");
      Integer itemSize = datatype instanceof String ? Tensor.ITEM_SIZES.get(datatype) : null;
      if (itemSize == null) {
        throw malformed(
            "'" + name + "': datatype " + datatype + " is not one of " + Tensor.ITEM_SIZES.keySet());
      }
      long count = Tensor.count(shape);
      Map<?, ?> params = object(entry, "parameters");
      if (params.containsKey("binary_data_size")) {
        long nbytes = wholeNumber(params.get("binary_data_size"), name);
        if (nbytes != count * itemSize) {
          throw malformed(
              "'" + name + "': binary_data_size " + nbytes + " does not match shape "
                  + Arrays.toString(shape) + " of " + datatype + " (" + count * itemSize
                  + " bytes)");
        }
        if (offset + nbytes > body.length) {
          throw malformed(
              "'" + name + "': its " + nbytes + " binary bytes run past the body (bytes "
                  + (offset - size) + ".." + (offset - size + nbytes) + " of the "
                  + (body.length - size) + " after the JSON header)");
        }
        byte[] data = Arrays.copyOfRange(body, offset, offset + (int) nbytes);
        offset += (int) nbytes;
        outputs.add(new Tensor(name, (String) datatype, shape, data));
      } else {
        outputs.add(fromJsonData(entry, name, shape, (String) datatype, itemSize));
      }
    }
    if (offset != body.length) {
      throw malformed(
          "the body has " + (body.length - offset) + " bytes after the JSON header that no "
              + "tensor declares (binary_data_size)");
    }
    @SuppressWarnings("unchecked")
    Map<String, Object> parameters = (Map<String, Object>) object(head, "parameters");
    return new Response(modelName, parameters, outputs);
  }

  private static int headerSize(String headerLength, int body) throws OffloadException {
    if (headerLength == null) {
      return body;
    }
    int size;
    try {
      size = Integer.parseInt(headerLength.trim());
    } catch (NumberFormatException e) {
      throw malformed(HEADER_LENGTH + " must be an integer, got '" + headerLength + "'");
    }
    if (size <= 0 || size > body) {
      throw malformed(HEADER_LENGTH + " is " + size + ", but the body has " + body + " bytes");
    }
    return size;
  }

  private static long[] shape(Map<?, ?> entry, String name) throws OffloadException {
    Object value = entry.get("shape");
    String wrong = "'" + name + "': 'shape' must be a list of integers >= 0, got " + value;
    if (!(value instanceof List<?> dims)) {
      throw malformed(wrong);
    }
    long[] shape = new long[dims.size()];
    double elements = 1;
    for (int i = 0; i < shape.length; i++) {
      Object d = dims.get(i);
      if (!(d instanceof Json.Number n) || !n.text.matches("\\d+")) {
        throw malformed(wrong);
      }
      try {
        shape[i] = n.longValue();
      } catch (NumberFormatException e) {
        throw malformed(wrong);
      }
      elements *= shape[i];
    }
    if (elements > MAX_ELEMENTS) {
      throw malformed("'" + name + "': shape " + Arrays.toString(shape) + " is over "
          + MAX_ELEMENTS + " elements");
    }
    return shape;
  }

  private static long wholeNumber(Object value, String name) throws OffloadException {
    if (value instanceof Json.Number n && n.text.matches("\\d+")) {
      try {
        return n.longValue();
      } catch (NumberFormatException e) {
        // falls through to the error below
      }
    }
    throw malformed("'" + name + "': binary_data_size must be an integer >= 0, got " + value);
  }

  private static Map<?, ?> object(Map<?, ?> map, String key) throws OffloadException {
    Object value = map.containsKey(key) ? map.get(key) : Map.of();
    if (!(value instanceof Map<?, ?> m)) {
      throw malformed("'" + key + "' must be an object, got " + value);
    }
    return m;
  }

  /** A tensor whose elements are in its 'data' (a flat or nested list), as little-endian bytes. */
  private static Tensor fromJsonData(
      Map<?, ?> entry, String name, long[] shape, String datatype, int itemSize)
      throws OffloadException {
    if (!entry.containsKey("data")) {
      throw malformed("'" + name + "' has neither 'data' nor parameters.binary_data_size");
    }
    if (datatype.equals("FP16")) {
      throw malformed("'" + name + "': FP16 travels as binary data only");
    }
    List<Object> values = new ArrayList<>();
    flatten(entry.get("data"), values);
    long count = Tensor.count(shape);
    if (values.size() != count) {
      throw malformed("'" + name + "': 'data' holds " + values.size() + " values, shape "
          + Arrays.toString(shape) + " needs " + count);
    }
    ByteBuffer b = ByteBuffer.allocate((int) count * itemSize).order(ByteOrder.LITTLE_ENDIAN);
    for (Object v : values) {
      try {
        put(b, datatype, v);
      } catch (RuntimeException e) {
        throw malformed("'" + name + "': 'data' is not a list of " + datatype + " values: " + v);
      }
    }
    return new Tensor(name, datatype, shape, b.array());
  }

  private static void flatten(Object value, List<Object> out) {
    if (value instanceof List<?> list) {
      for (Object item : list) {
        flatten(item, out);
      }
    } else {
      out.add(value);
    }
  }

  private static void put(ByteBuffer b, String datatype, Object value) {
    if (datatype.equals("BOOL")) {
      b.put((byte) ((Boolean) value ? 1 : 0));
      return;
    }
    Json.Number n = (Json.Number) value;
    switch (datatype) {
      case "FP32" -> b.putFloat((float) n.value());
      case "FP64" -> b.putDouble(n.value());
      case "INT8", "UINT8" -> b.put((byte) n.longValue());
      case "INT16", "UINT16" -> b.putShort((short) n.longValue());
      case "INT32", "UINT32" -> b.putInt((int) n.longValue());
      case "INT64" -> b.putLong(n.longValue());
      case "UINT64" -> b.putLong(Long.parseUnsignedLong(n.text));
      default -> throw new IllegalArgumentException(datatype);
    }
  }

  private static String clip(String text) {
    return text.length() <= 200 ? text : text.substring(0, 200) + "...";
  }

  private static OffloadException malformed(String what) {
    return new OffloadException(
        "the server's answer is not usable: " + what, OffloadException.PROTOCOL, 200);
  }
}
