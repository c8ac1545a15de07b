package dev.ponder.core.offload;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.ponder.core.Json;
import java.io.ByteArrayOutputStream;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;

/** Bodies of the binary tensor extension, both ways, and every malformed answer refused with a
 * message that says what is wrong; tensors and HTTP statuses. No server needed. */
class ProtocolTest {
  static byte[] body(String json, byte[]... chunks) {
    ByteArrayOutputStream out = new ByteArrayOutputStream();
    out.writeBytes(json.getBytes(StandardCharsets.UTF_8));
    for (byte[] c : chunks) {
      out.writeBytes(c);
    }
    return out.toByteArray();
  }

  static String length(String json) {
    return Integer.toString(json.getBytes(StandardCharsets.UTF_8).length);
  }

  @Test
  void aRequestIsAJsonHeaderThenTheRawBytesInInputOrder() {
    Tensor tokens = Tensor.fp32("tokens", new float[] {1.5f, -2f, 0.25f, 3f}, 1, 2, 2);
    Tensor mask = Tensor.int64("attention_mask", new long[] {1, 0}, 1, 2);
    Map<String, Object> params = new LinkedHashMap<>();
    params.put("split_block", 1);
    params.put("keep", 0.5);
    params.put("selector", "cls\"x");
    Protocol.Body b = Protocol.encodeRequest(List.of(tokens, mask), params);
    String head = new String(b.bytes(), 0, b.headerLength(), StandardCharsets.UTF_8);
    Map<?, ?> parsed = (Map<?, ?>) Json.parse(head);
    Map<?, ?> p = (Map<?, ?>) parsed.get("parameters");
    assertEquals("1", p.get("split_block").toString());
    assertEquals("0.5", p.get("keep").toString());
    assertEquals("cls\"x", p.get("selector"));
    assertEquals(Boolean.TRUE, p.get("binary_data_output"));
    List<?> inputs = (List<?>) parsed.get("inputs");
    Map<?, ?> first = (Map<?, ?>) inputs.get(0);
    assertEquals("tokens", first.get("name"));
    assertEquals("FP32", first.get("datatype"));
    assertEquals("[1,2,2]", Json.canonical(first.get("shape")));
    assertEquals("{\"binary_data_size\":16}", Json.canonical(first.get("parameters")));
    byte[] rest = Arrays.copyOfRange(b.bytes(), b.headerLength(), b.bytes().length);
    assertEquals(16 + 16, rest.length);
    assertArrayEquals(tokens.data(), Arrays.copyOfRange(rest, 0, 16));
    assertArrayEquals(mask.data(), Arrays.copyOfRange(rest, 16, 32));
    // little-endian: 1.5f is 0x3fc00000
    assertArrayEquals(new byte[] {0, 0, (byte) 0xc0, 0x3f}, Arrays.copyOfRange(rest, 0, 4));
  }

  @Test
  void binaryAndJsonAnswersDecodeToTheSameTensors() throws Exception {
    Tensor logits = Tensor.fp32("logits", new float[] {0.1f, -3.25f, 7f, 1e-8f}, 2, 2);
    String json =
        "{\"model_name\":\"m\",\"parameters\":{\"server_ms\":1.5},\"outputs\":[{\"name\":\"logits\","
            + "\"shape\":[2,2],\"datatype\":\"FP32\",\"parameters\":{\"binary_data_size\":16}}]}";
    Protocol.Response binary = Protocol.decodeResponse(body(json, logits.data()), length(json));
    assertEquals("m", binary.modelName());
    assertEquals(1.5, ((Json.Number) binary.parameters().get("server_ms")).value());
    assertEquals(logits, binary.output("logits"));
    String text =
        "{\"model_name\":\"m\",\"outputs\":[{\"name\":\"logits\",\"shape\":[2,2],"
            + "\"datatype\":\"FP32\",\"data\":[[0.10000000149011612,-3.25],[7.0,"
            + "9.99999993922529e-09]]},{\"name\":\"n\",\"shape\":[3],\"datatype\":\"INT64\","
            + "\"data\":[1,-2,3]},{\"name\":\"b\",\"shape\":[2],\"datatype\":\"BOOL\","
            + "\"data\":[true,false]}]}";
    Protocol.Response parsed = Protocol.decodeResponse(text.getBytes(StandardCharsets.UTF_8), null);
    assertEquals(logits, parsed.output("logits"));
    assertArrayEquals(new long[] {1, -2, 3}, parsed.output("n").longs());
    assertArrayEquals(new boolean[] {true, false}, parsed.output("b").bools());
    assertNull(parsed.output("missing"));
    float[][] m = OffloadClient.logits(parsed.outputs().toArray(new Tensor[0]));
    assertArrayEquals(new float[] {7f, 1e-8f}, m[1]);
  }

  static String malformed(byte[] body, String headerLength) {
    OffloadException e =
        assertThrows(OffloadException.class, () -> Protocol.decodeResponse(body, headerLength));
    assertEquals("protocol", e.kind());
    return e.getMessage();
  }

  @Test
  void malformedAnswersSayWhatIsWrong() {
    String head =
        "{\"model_name\":\"m\",\"outputs\":[{\"name\":\"logits\",\"shape\":[2,2],"
            + "\"datatype\":\"FP32\",\"parameters\":{\"binary_data_size\":%d}}]}";
    String right = String.format(head, 16);
    String wrongSize = String.format(head, 12);
    assertTrue(malformed(body(wrongSize, new byte[12]), length(wrongSize))
        .contains("binary_data_size 12 does not match shape [2, 2] of FP32 (16 bytes)"));
    assertTrue(malformed(body(right, new byte[10]), length(right))
        .contains("its 16 binary bytes run past the body (bytes 0..16 of the 10 after"));
    assertTrue(malformed(body(right, new byte[20]), length(right))
        .contains("the body has 4 bytes after the JSON header that no tensor declares"));
    assertTrue(malformed(body(right, new byte[16]), "5000")
        .contains("Inference-Header-Content-Length is 5000, but the body has"));
    assertTrue(malformed(body(right, new byte[16]), "x")
        .contains("Inference-Header-Content-Length must be an integer"));
    assertTrue(malformed(body("{not json"), null).contains("the JSON header is not valid JSON"));
    assertTrue(malformed(body("[1]"), null).contains("must be an object"));
    assertTrue(malformed(body("{\"outputs\":[]}"), null).contains("'model_name'"));
    assertTrue(malformed(body("{\"model_name\":\"m\",\"outputs\":[]}"), null)
        .contains("'outputs' must be a non-empty list"));
    String bytes = "{\"model_name\":\"m\",\"outputs\":[{\"name\":\"s\",\"shape\":[1],"
        + "\"datatype\":\"BYTES\",\"data\":[\"a\"]}]}";
    assertTrue(malformed(body(bytes), null).contains("datatype BYTES is not one of"));
    String shape = "{\"model_name\":\"m\",\"outputs\":[{\"name\":\"x\",\"shape\":[-1],"
        + "\"datatype\":\"FP32\",\"data\":[1]}]}";
    assertTrue(malformed(body(shape), null).contains("'shape' must be a list of integers >= 0"));
    String count = "{\"model_name\":\"m\",\"outputs\":[{\"name\":\"x\",\"shape\":[3],"
        + "\"datatype\":\"FP32\",\"data\":[1,2]}]}";
    assertTrue(malformed(body(count), null).contains("'data' holds 2 values, shape [3] needs 3"));
    String twice = "{\"model_name\":\"m\",\"outputs\":[{\"name\":\"x\",\"shape\":[1],"
        + "\"datatype\":\"FP32\",\"data\":[1]},{\"name\":\"x\",\"shape\":[1],\"datatype\":"
        + "\"FP32\",\"data\":[1]}]}";
    assertTrue(malformed(body(twice), null).contains("'x' is given twice"));
    String notLogits = "{\"model_name\":\"m\",\"outputs\":[{\"name\":\"x\",\"shape\":[1],"
        + "\"datatype\":\"FP32\",\"data\":[1]}]}";
    OffloadException e = assertThrows(OffloadException.class, () -> OffloadClient.logits(
        Protocol.decodeResponse(body(notLogits), null).outputs().toArray(new Tensor[0])));
    assertTrue(e.getMessage().contains("no 'logits' output, only [x]"), e.getMessage());
  }

  @Test
  void httpStatusesMapToPythonsKinds() {
    byte[] json = "{\"error\":\"missing or wrong bearer token\"}".getBytes(StandardCharsets.UTF_8);
    OffloadException e = OffloadClient.statusError(401, json);
    assertEquals("unauthorized", e.kind());
    assertEquals(401, e.status());
    assertEquals("the server answered 401: missing or wrong bearer token", e.getMessage());
    assertEquals("rejected", OffloadClient.statusError(400, json).kind());
    assertEquals("rejected", OffloadClient.statusError(404, json).kind());
    assertEquals("rejected", OffloadClient.statusError(413, json).kind());
    assertEquals("server", OffloadClient.statusError(503, json).kind());
    OffloadException html = OffloadClient.statusError(502, "<html>bad gateway</html>".getBytes(
        StandardCharsets.UTF_8));
    assertEquals("server", html.kind());
    assertEquals("the server answered 502: <html>bad gateway</html>", html.getMessage());
  }

  @Test
  void tensorsHoldLittleEndianBytesAndCheckTheirSize() {
    Tensor t = Tensor.int64("n", new long[] {1, 256});
    assertArrayEquals(new long[] {2}, t.shape());
    assertEquals(1, t.data()[0]);
    assertEquals(1, t.data()[9]);
    assertArrayEquals(new int[] {-7, 9}, Tensor.int32("i", new int[] {-7, 9}).ints());
    assertArrayEquals(new double[] {0.1}, Tensor.fp64("d", new double[] {0.1}).doubles());
    assertArrayEquals(new float[] {0.1f}, Tensor.fp64("d", new double[] {0.1}).floats());
    assertArrayEquals(new float[] {1f, -2f, 65504f, 0x1p-24f},
        Tensor.fp16Bits("h", new short[] {0x3c00, (short) 0xc000, 0x7bff, 0x0001}).floats());
    IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
        () -> Tensor.fp32("x", new float[5], 2, 2));
    assertEquals("x: shape [2, 2] of FP32 needs 16 bytes, got 20", e.getMessage());
    assertThrows(IllegalArgumentException.class, () -> new Tensor("x", "BYTES", new long[] {0},
        new byte[0]));
    IllegalStateException wrong = assertThrows(IllegalStateException.class, () -> t.floats());
    assertTrue(wrong.getMessage().contains("n is INT64; floats() reads FP32, FP64 or FP16"));
  }

  @Test
  void theLinkEstimateFollowsTransfersAndRestartsOnANewLink() {
    // as tests/runtime/serve/test_serve.py checks Python's LinkEstimate
    LinkEstimate link = new LinkEstimate(0.5);
    assertNull(link.secondsFor(1000));
    link.add(0.010, 100); // a small request: the round trip
    for (int i = 0; i < 5; i++) {
      link.add(0.010 + 1e6 / 50e6, 1_000_000); // 1 MB at 50 MB/s
    }
    assertEquals(10.0, link.rttMillis(), 1e-9);
    assertEquals(50e6, link.bytesPerSecond(), 50e6 * 1e-6);
    assertEquals(0.11, link.secondsFor(5_000_000), 0.11 * 1e-3);
    for (int i = 0; i < 3; i++) {
      link.add(0.010 + 1e6 / 5e6, 1_000_000); // a link ten times slower
    }
    assertEquals(1, link.changes());
    assertTrue(link.bytesPerSecond() < 6e6);
    assertTrue(link.toString().startsWith("link: RTT 10.0 ms, "), link.toString());
  }
}
