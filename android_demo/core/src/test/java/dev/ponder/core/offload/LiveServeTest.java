package dev.ponder.core.offload;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import dev.ponder.core.Json;
import java.io.IOException;
import java.net.URL;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicLong;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/**
 * Against a real {@code ponder serve} on 127.0.0.1 that tests/android/test_java_offload.py
 * starts (PONDER_TEST_SERVE_URL, _MODEL, _TOKEN) with what Python sent it and what Python's
 * OffloadClient got back (PONDER_TEST_OFFLOAD_DIR/cases.json), and a socket that accepts and
 * never answers (PONDER_TEST_SILENT_URL). Skipped without them; the pytest run allows no skip.
 */
class LiveServeTest {
  private String url;
  private String model;
  private String token;
  private Path dir;
  private Map<?, ?> cases;

  @BeforeEach
  void read() throws IOException {
    url = System.getenv("PONDER_TEST_SERVE_URL");
    String folder = System.getenv("PONDER_TEST_OFFLOAD_DIR");
    assumeTrue(url != null && folder != null, "PONDER_TEST_SERVE_URL/_OFFLOAD_DIR are not set");
    model = System.getenv("PONDER_TEST_SERVE_MODEL");
    token = System.getenv("PONDER_TEST_SERVE_TOKEN");
    dir = Path.of(folder);
    cases = (Map<?, ?>) Json.parse(Files.readString(dir.resolve("cases.json")));
  }

  OffloadClient client(String bearer, int readTimeoutMs) {
    return new OffloadClient(url, model, bearer, 5000, readTimeoutMs);
  }

  @SuppressWarnings("unchecked")
  Map<String, Object> params(String key) {
    return new HashMap<>((Map<String, Object>) cases.get(key));
  }

  List<byte[]> payloads() throws IOException {
    List<byte[]> out = new ArrayList<>();
    for (Object name : (List<?>) cases.get("payloads")) {
      out.add(Files.readAllBytes(dir.resolve((String) name)));
    }
    return out;
  }

  long[] shape(String key) {
    List<?> dims = (List<?>) cases.get(key);
    long[] out = new long[dims.size()];
    for (int i = 0; i < out.length; i++) {
      out[i] = ((Json.Number) dims.get(i)).longValue();
    }
    return out;
  }

  ByteBuffer file(String key) throws IOException {
    byte[] data = Files.readAllBytes(dir.resolve((String) cases.get(key)));
    return ByteBuffer.wrap(data).order(ByteOrder.LITTLE_ENDIAN);
  }

  float[] floats(String key) throws IOException {
    ByteBuffer b = file(key);
    float[] out = new float[b.remaining() / 4];
    b.asFloatBuffer().get(out);
    return out;
  }

  /** Python's logits, row by row, to 1e-6 (they come from the same server). */
  void assertLogits(String key, float[][] got) throws IOException {
    long[] shape = shape("logits_shape");
    float[] want = floats(key);
    assertEquals(shape[0], got.length);
    for (int r = 0; r < got.length; r++) {
      assertEquals(shape[1], got[r].length);
      for (int c = 0; c < got[r].length; c++) {
        assertEquals(want[(int) (r * shape[1] + c)], got[r][c], 1e-6, "logit [" + r + "][" + c
            + "]");
      }
    }
  }

  @Test
  void payloadsPythonSentGetTheLogitsPythonGot() throws Exception {
    OffloadClient c = client(token, 30_000);
    assertTrue(c.live());
    float[][] got = null;
    for (int i = 0; i < 3; i++) { // kept-alive connections, reused
      got = c.inferPayloads(payloads(), params("payload_params"));
    }
    assertLogits("payload_logits", got);
    assertEquals(3, c.link().samples());
    assertTrue(c.link().rttMillis() > 0, c.link().toString());
    assertNotNull(c.lastServerMillis());
    assertTrue(c.lastAnswerBytes() > 0);
  }

  @Test
  void decodedTokensAndTheirMaskGetTheLogitsPythonGot() throws Exception {
    long[] shape = shape("tokens_shape");
    ByteBuffer m = file("mask");
    long[] mask = new long[m.remaining() / 8];
    m.asLongBuffer().get(mask);
    OffloadClient c = client(token, 30_000);
    float[][] got = c.inferTokens(floats("tokens"), shape, mask, params("token_params"));
    assertLogits("token_logits", got);
    Tensor[] outputs = c.infer(
        List.of(Tensor.fp32("tokens", floats("tokens"), shape),
            Tensor.int64("attention_mask", mask, shape[0], shape[1])), params("token_params"));
    assertEquals(1, outputs.length);
    assertEquals("logits", outputs[0].name());
    assertEquals("FP32", outputs[0].datatype());
  }

  @Test
  void aWrongOrMissingTokenIsUnauthorized() throws Exception {
    for (String bearer : new String[] {"wrong", null}) {
      OffloadException e = assertThrows(OffloadException.class,
          () -> client(bearer, 30_000).inferPayloads(payloads(), params("payload_params")));
      assertEquals("unauthorized", e.kind());
      assertEquals(401, e.status());
      assertTrue(e.getMessage().contains("bearer token"), e.getMessage());
    }
    assertTrue(client("wrong", 30_000).live()); // the health routes stay open
  }

  @Test
  void aMalformedRequestIsRejectedWithTheServersMessage() throws Exception {
    OffloadClient c = client(token, 30_000);
    Map<String, Object> other = params("payload_params");
    other.put("split_block", 0);
    OffloadException wrongSplit = assertThrows(OffloadException.class,
        () -> c.inferPayloads(payloads(), other));
    assertEquals("rejected", wrongSplit.kind());
    assertEquals(400, wrongSplit.status());
    assertTrue(wrongSplit.getMessage().contains("split_block=0, but this cloud half serves"),
        wrongSplit.getMessage());
    long[] shape = shape("tokens_shape");
    float[] narrow = new float[(int) (shape[0] * shape[1] * 7)];
    OffloadException width = assertThrows(OffloadException.class,
        () -> c.inferTokens(narrow, new long[] {shape[0], shape[1], 7}, null,
            params("token_params")));
    assertEquals("rejected", width.kind());
    assertTrue(width.getMessage().contains("this split takes [B, K, " + shape[2] + "]"),
        width.getMessage());
    OffloadException noModel = assertThrows(OffloadException.class,
        () -> new OffloadClient(url, "other", token, 5000, 30_000)
            .inferPayloads(payloads(), params("payload_params")));
    assertEquals("rejected", noModel.kind());
    assertEquals(404, noModel.status());
    assertTrue(noModel.getMessage().contains("unknown model 'other'"), noModel.getMessage());
    assertLogits("payload_logits", c.inferPayloads(payloads(), params("payload_params")));
  }

  @Test
  void aServerThatNeverAnswersIsATimeoutWithinTheReadTimeout() throws Exception {
    String silent = System.getenv("PONDER_TEST_SILENT_URL");
    assumeTrue(silent != null, "PONDER_TEST_SILENT_URL is not set");
    OffloadClient c = new OffloadClient(silent, model, token, 2000, 500);
    long start = System.nanoTime();
    OffloadException e = assertThrows(OffloadException.class,
        () -> c.inferPayloads(payloads(), params("payload_params")));
    double seconds = (System.nanoTime() - start) / 1e9;
    assertEquals("timeout", e.kind());
    assertNull(e.status());
    assertTrue(e.getMessage().contains("within 500 ms"), e.getMessage());
    assertTrue(seconds >= 0.45 && seconds < 5, "took " + seconds + " s");
  }

  @Test
  void theOffloaderFallsBackWhileTheServerIsAwayAndResumesWhenItIsBack() throws Exception {
    int port = LocalServerTest.closedPort();
    AtomicLong now = new AtomicLong();
    float[][] local = {{42f}};
    Offloader<List<byte[]>> offloader = new Offloader<>(
        new OffloadClient("http://127.0.0.1:" + port, model, token, 5000, 30_000),
        payloads -> payloads, payloads -> local, 1000, 60_000, now::get);
    Offloader.Result down = offloader.offload(payloads(), params("payload_params"));
    assertEquals("fallback", down.source());
    assertEquals("refused", down.error().kind());
    assertEquals(local, down.logits());
    assertTrue(down.bytesSent() > 0);
    int target = new URL(url).getPort();
    Relay back = new Relay(port, target);
    try { // the service is back at the same address
      Offloader.Result waiting = offloader.offload(payloads(), params("payload_params"));
      assertEquals("local", waiting.source()); // still backing off
      assertTrue(waiting.backingOff());
      now.addAndGet(1000);
      Offloader.Result resumed = offloader.offload(payloads(), params("payload_params"));
      assertEquals("cloud", resumed.source(), String.valueOf(resumed.error()));
      assertNull(resumed.error());
      assertLogits("payload_logits", resumed.logits());
      assertEquals(0, offloader.failures());
      assertEquals(0, offloader.backoffLeftMs());
      assertFalse(offloader.offload(payloads(), params("payload_params")).backingOff());
    } finally {
      back.close();
    }
    Offloader.Result gone = offloader.offload(payloads(), params("payload_params"));
    assertEquals("fallback", gone.source(), "the relay accepted " + back.accepted()
        + " connections; " + gone.millis() + " ms");
  }
}
