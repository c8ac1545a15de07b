package dev.ponder.core.offload;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import dev.ponder.core.Json;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;

/**
 * {@link Payloads}: self-checks, and (with PONDER_TEST_PAYLOAD_DIR/cases.json from
 * tests/android/test_java_payload.py, and PONDER_TEST_SERVE_URL, _MODEL, _TOKEN of a real
 * {@code ponder serve}) the same kept tokens and byte-identical payloads as Python's
 * select_tokens / SplitBundle.send / encode_payload with zstd off, and the logits Python's
 * OffloadClient got from the server for them. The pytest run allows no skip.
 */
class PayloadTest {
  @Test
  void floatToHalfRoundsToNearestEvenOverEveryHalf() {
    for (int h = 0; h < 0x7c00; h++) { // every finite non-negative half
      float value = Tensor.halfToFloat((short) h);
      assertEquals((short) h, Payloads.floatToHalf(value));
      assertEquals((short) (h | 0x8000), Payloads.floatToHalf(-value));
      if (h == 0x7bff) {
        break; // the largest finite half: above it, 65520 and up are infinity (checked below)
      }
      // the midpoint to the next half (exact in float) goes to the even one; just off it, not
      float next = Tensor.halfToFloat((short) (h + 1));
      float mid = (value + next) / 2;
      int even = (h & 1) == 0 ? h : h + 1;
      assertEquals((short) even, Payloads.floatToHalf(mid), "midpoint after half " + h);
      assertEquals((short) h, Payloads.floatToHalf(Math.nextDown(mid)));
      assertEquals((short) (h + 1), Payloads.floatToHalf(Math.nextUp(mid)));
    }
    assertEquals((short) 0x7c00, Payloads.floatToHalf(65520f));
    assertEquals((short) 0x7bff, Payloads.floatToHalf(Math.nextDown(65520f)));
    assertEquals((short) 0x7c00, Payloads.floatToHalf(Float.POSITIVE_INFINITY));
    assertEquals((short) 0, Payloads.floatToHalf(0x1p-25f)); // the tie with 0 goes to 0
    assertEquals((short) 1, Payloads.floatToHalf(Math.nextUp(0x1p-25f)));
  }

  @Test
  void floatsAndStringsAreWrittenAsPythonsJsonDoes() {
    String[][] cases = {{"0.5", "0.5"}, {"1.0", "1.0"}, {"0.1", "0.1"}, {"1e-05", "1e-05"},
        {"0.0001", "0.0001"}, {"1e+16", "1e+16"}, {"1000000000000000.0", "1e15"},
        {"1.5e-07", "1.5e-7"}, {"-2.5", "-2.5"}, {"123456.789", "123456.789"},
        {"5e-324", "4.9E-324"}, {"1.7976931348623157e+308", "1.7976931348623157E308"},
        {"0.30000000000000004", "0.30000000000000004"}, {"2e+22", "2e22"}};
    for (String[] c : cases) {
      assertEquals(c[0], Json.pythonFloat(Double.parseDouble(c[1])), c[1]);
    }
    assertEquals("-0.0", Json.pythonFloat(-0.0));
    Map<String, Object> value = new LinkedHashMap<>();
    value.put("z", "\u00e9\"\\\n\u007f");
    value.put("a", List.of(1, 2L, 0.25, true, Map.of()));
    value.put("n", null);
    assertEquals("{\"z\":\"\\u00e9\\\"\\\\\\n\\u007f\",\"a\":[1,2,0.25,true,{}],\"n\":null}",
        Json.python(value));
    assertThrows(IllegalArgumentException.class, () -> Json.pythonFloat(Double.NaN));
  }

  @Test
  void aPayloadHasThePrefixHeaderAndBodyItDeclares() {
    float[] tokens = {127f, 2.5f, -3.5f, 0f, 0f, 0f};
    byte[] p = Payloads.encode(tokens, 2, 3, "int8", new int[] {0, 7}, Map.of("keep", 0.5));
    ByteBuffer b = ByteBuffer.wrap(p).order(ByteOrder.LITTLE_ENDIAN);
    assertEquals("PNDP", new String(p, 0, 4, StandardCharsets.US_ASCII));
    assertEquals(1, b.getShort(4));
    assertEquals(0, b.getShort(6));
    int head = b.getInt(8);
    int body = b.getInt(12);
    assertEquals(p.length, 20 + head + body);
    assertEquals(6 + 2 * 4 + 2, body);
    String json = new String(p, 20, head, StandardCharsets.US_ASCII);
    assertTrue(json.startsWith("{\"params\":{\"keep\":0.5},\"body_nbytes\":16,\"zstd_level\":null,"),
        json);
    assertArrayEquals(new byte[] {127, 2, -4, 0, 0, 0}, java.util.Arrays.copyOfRange(p,
        20 + head, 20 + head + 6)); // scale 1, rounded half to even; a zero row: codes 0
    assertThrows(IllegalArgumentException.class,
        () -> Payloads.encode(new float[] {Float.NaN}, 1, 1, "fp32", null, Map.of()));
    assertThrows(IllegalArgumentException.class,
        () -> Payloads.encode(tokens, 2, 3, "zstd", null, Map.of()));
  }

  @Test
  void selectionKeepsTheAnchorAndTheTopScoredRealTokensInPositionOrder() {
    float[] scores = {0f, 5f, 1f, 5f, 9f, 2f};
    boolean[] real = {true, true, true, true, false, true};
    assertArrayEquals(new int[] {0, 1, 3}, Payloads.selectTokens(scores, real, 0.5, "first"));
    assertArrayEquals(new int[] {1, 3, 5}, Payloads.selectTokens(scores, real, 0.5, "last"));
    assertArrayEquals(new int[] {0}, Payloads.selectTokens(scores, new boolean[6], 0.5, "last"));
    assertArrayEquals(new int[] {0, 1, 2, 3, 5}, Payloads.selectTokens(scores, real, 1, "first"));
  }

  // ---- against Python (PONDER_TEST_PAYLOAD_DIR) ----

  private static Map<?, ?> cases() throws IOException {
    String folder = System.getenv("PONDER_TEST_PAYLOAD_DIR");
    assumeTrue(folder != null, "PONDER_TEST_PAYLOAD_DIR is not set");
    return (Map<?, ?>) Json.parse(Files.readString(Path.of(folder, "cases.json")));
  }

  private static Path dir() {
    return Path.of(System.getenv("PONDER_TEST_PAYLOAD_DIR"));
  }

  private static ByteBuffer file(Object name) throws IOException {
    return ByteBuffer.wrap(Files.readAllBytes(dir().resolve((String) name)))
        .order(ByteOrder.LITTLE_ENDIAN);
  }

  private static float[] floats(Object name) throws IOException {
    ByteBuffer b = file(name);
    float[] out = new float[b.remaining() / 4];
    b.asFloatBuffer().get(out);
    return out;
  }

  private static int[] ints(Object list) {
    List<?> items = (List<?>) list;
    int[] out = new int[items.size()];
    for (int i = 0; i < out.length; i++) {
      out[i] = (int) ((Json.Number) items.get(i)).longValue();
    }
    return out;
  }

  private static double number(Object n) {
    return ((Json.Number) n).value();
  }

  @SuppressWarnings("unchecked")
  private static Map<String, Object> map(Object m) {
    return (Map<String, Object>) m;
  }

  @Test
  void pythonsFloatReprsAreReproduced() throws IOException {
    List<?> reprs = (List<?>) cases().get("floats");
    assertTrue(reprs.size() > 100);
    for (Object r : reprs) {
      String text = ((Json.Number) r).text;
      assertEquals(text, Json.pythonFloat(Double.parseDouble(text)));
    }
  }

  @Test
  void theSameTokensAsPythonsSelectTokens() throws IOException {
    List<?> selections = (List<?>) cases().get("selections");
    assertTrue(selections.size() > 50);
    for (Object item : selections) {
      Map<?, ?> c = (Map<?, ?>) item;
      List<?> s = (List<?>) c.get("scores");
      List<?> r = (List<?>) c.get("real");
      float[] scores = new float[s.size()];
      boolean[] real = new boolean[r.size()];
      for (int i = 0; i < scores.length; i++) {
        scores[i] = (float) number(s.get(i));
        real[i] = (Boolean) r.get(i);
      }
      int[] got = Payloads.selectTokens(scores, real, number(c.get("keep")),
          (String) c.get("anchor"));
      assertArrayEquals(ints(c.get("want")), got, Json.canonical(c));
    }
  }

  @Test
  void encodeGivesPythonsEncodePayloadBytes() throws IOException {
    List<?> encodes = (List<?>) cases().get("encodes");
    assertTrue(encodes.size() >= 10);
    for (Object item : encodes) {
      Map<?, ?> c = (Map<?, ?>) item;
      int[] shape = ints(c.get("shape"));
      int[] index = c.get("index") == null ? null : ints(c.get("index"));
      byte[] got = Payloads.encode(floats(c.get("tokens")), shape[0], shape[1],
          (String) c.get("codec"), index, map(c.get("params")));
      byte[] want = Files.readAllBytes(dir().resolve((String) c.get("payload")));
      assertArrayEquals(want, got, c.get("payload") + ": " + c.get("codec") + " "
          + c.get("shape"));
    }
  }

  /** Per edge output and keep x codec: Java's payloads from the device half's outputs. */
  private static List<byte[]> javaSend(Map<?, ?> edge, Map<?, ?> c, Map<String, Object> split)
      throws IOException {
    int[] shape = ints(edge.get("shape"));
    long[] mask = null;
    if (edge.get("mask") != null) {
      ByteBuffer m = file(edge.get("mask"));
      mask = new long[m.remaining() / 8];
      m.asLongBuffer().get(mask);
    }
    return Payloads.send(floats(edge.get("hidden")), floats(edge.get("scores")), mask, shape[0],
        shape[1], shape[2], number(c.get("keep")), (String) c.get("codec"),
        (String) edge.get("anchor"), split);
  }

  @Test
  void sendGivesPythonsPayloadsByteForByteAndTheServerTheSameLogits() throws Exception {
    Map<?, ?> all = cases();
    String url = System.getenv("PONDER_TEST_SERVE_URL");
    assumeTrue(url != null, "PONDER_TEST_SERVE_URL is not set");
    OffloadClient client = new OffloadClient(url, System.getenv("PONDER_TEST_SERVE_MODEL"),
        System.getenv("PONDER_TEST_SERVE_TOKEN"), 5000, 30_000);
    Map<String, Object> split = map(all.get("split_params"));
    int checked = 0;
    for (Object e : (List<?>) all.get("edges")) {
      Map<?, ?> edge = (Map<?, ?>) e;
      for (Object item : (List<?>) edge.get("cases")) {
        Map<?, ?> c = (Map<?, ?>) item;
        String what = edge.get("name") + " keep " + c.get("keep") + " " + c.get("codec");
        List<byte[]> got = javaSend(edge, c, split);
        List<?> files = (List<?>) c.get("payloads");
        assertEquals(files.size(), got.size(), what);
        for (int b = 0; b < got.size(); b++) {
          byte[] want = Files.readAllBytes(dir().resolve((String) files.get(b)));
          assertArrayEquals(want, got.get(b), what + " sample " + b);
        }
        float[][] logits = client.inferPayloads(got,
            Payloads.params(split, number(c.get("keep")), (String) c.get("codec")));
        float[] want = floats(c.get("logits"));
        int columns = logits[0].length;
        assertEquals(want.length, logits.length * columns, what);
        for (int r = 0; r < logits.length; r++) {
          for (int k = 0; k < columns; k++) {
            assertEquals(want[r * columns + k], logits[r][k], 1e-6,
                what + " logit [" + r + "][" + k + "]");
          }
        }
        checked++;
      }
    }
    assertEquals(((Json.Number) all.get("send_cases")).longValue(), checked);
  }
}
