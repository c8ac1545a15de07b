package dev.ponder.core.offload;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.sun.net.httpserver.HttpServer;
import java.io.IOException;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/**
 * The client and the Offloader against the JDK's own HTTP server on 127.0.0.1 (answers this test
 * writes: malformed ones, 5xx), and against a port nothing listens on. No Python needed.
 */
class LocalServerTest {
  private HttpServer server;
  private final AtomicReference<Answer> answer = new AtomicReference<>();
  private final List<Map<String, String>> seen = new ArrayList<>();

  record Answer(int status, String headerLength, byte[] body) {}

  @BeforeEach
  void start() throws IOException {
    server = HttpServer.create(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0), 0);
    server.createContext("/", exchange -> {
      byte[] request = exchange.getRequestBody().readAllBytes();
      synchronized (seen) {
        seen.add(Map.of(
            "method", exchange.getRequestMethod(),
            "path", exchange.getRequestURI().getPath(),
            "auth", String.valueOf(exchange.getRequestHeaders().getFirst("Authorization")),
            "type", String.valueOf(exchange.getRequestHeaders().getFirst("Content-Type")),
            "length", String.valueOf(exchange.getRequestHeaders().getFirst(
                Protocol.HEADER_LENGTH)),
            "bytes", Integer.toString(request.length)));
      }
      Answer a = answer.get();
      if (a.headerLength != null) {
        exchange.getResponseHeaders().set(Protocol.HEADER_LENGTH, a.headerLength);
      }
      exchange.sendResponseHeaders(a.status, a.body.length == 0 ? -1 : a.body.length);
      try (OutputStream out = exchange.getResponseBody()) {
        out.write(a.body);
      }
    });
    server.start();
  }

  @AfterEach
  void stop() {
    server.stop(0);
  }

  OffloadClient client(String token) {
    return new OffloadClient(
        "127.0.0.1:" + server.getAddress().getPort(), "m", token, 2000, 2000);
  }

  static int closedPort() throws IOException {
    try (ServerSocket s = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
      return s.getLocalPort();
    }
  }

  @Test
  void aBinaryAnswerIsDecodedAndTheRequestCarriesItsHeaders() throws Exception {
    String json =
        "{\"model_name\":\"m\",\"parameters\":{\"server_ms\":2.5},\"outputs\":[{\"name\":"
            + "\"logits\",\"shape\":[1,3],\"datatype\":\"FP32\",\"parameters\":"
            + "{\"binary_data_size\":12}}]}";
    byte[] logits = Tensor.fp32("logits", new float[] {1f, 2f, -3f}).data();
    answer.set(new Answer(200, ProtocolTest.length(json), ProtocolTest.body(json, logits)));
    OffloadClient c = client("tok");
    float[][] got = c.inferPayloads(List.of(new byte[] {1, 2, 3}, new byte[] {4}), Map.of());
    assertArrayEquals(new float[] {1f, 2f, -3f}, got[0]);
    assertEquals(2.5, c.lastServerMillis());
    assertEquals(1, c.link().samples());
    Map<String, String> request = seen.get(0);
    assertEquals("POST", request.get("method"));
    assertEquals("/v2/models/m/infer", request.get("path"));
    assertEquals("Bearer tok", request.get("auth"));
    assertEquals("application/octet-stream", request.get("type"));
    int header = Integer.parseInt(request.get("length"));
    assertEquals(header + 4 + 16, Integer.parseInt(request.get("bytes"))); // payload + sizes
  }

  @Test
  void serverErrorsAndMalformedAnswersHaveTheirKinds() throws Exception {
    answer.set(new Answer(503, null,
        "{\"error\":\"at its concurrency limit\"}".getBytes(StandardCharsets.UTF_8)));
    OffloadException busy = assertThrows(OffloadException.class,
        () -> client(null).inferTokens(new float[2], new long[] {1, 1, 2}, null, Map.of()));
    assertEquals("server", busy.kind());
    assertEquals(503, busy.status());
    assertTrue(busy.getMessage().endsWith("503: at its concurrency limit"), busy.getMessage());
    answer.set(new Answer(200, "2", "{}garbage".getBytes(StandardCharsets.UTF_8)));
    OffloadException garbage = assertThrows(OffloadException.class,
        () -> client(null).inferTokens(new float[2], new long[] {1, 1, 2}, null, Map.of()));
    assertEquals("protocol", garbage.kind());
    assertTrue(garbage.getMessage().contains("'model_name'"), garbage.getMessage());
    assertEquals("null", seen.get(0).get("auth")); // no token: no Authorization header
  }

  @Test
  void nothingListeningIsRefusedAndLiveSaysFalse() throws Exception {
    OffloadClient c = new OffloadClient("http://127.0.0.1:" + closedPort(), "m", null, 2000, 2000);
    OffloadException e = assertThrows(OffloadException.class,
        () -> c.inferPayloads(List.of(new byte[] {1}), Map.of()));
    assertEquals("refused", e.kind());
    assertNull(e.status());
    assertTrue(e.getMessage().startsWith("cannot reach http://127.0.0.1:"), e.getMessage());
    assertFalse(c.live());
    answer.set(new Answer(200, null, "{\"live\":true}".getBytes(StandardCharsets.UTF_8)));
    assertTrue(client(null).live());
  }

  @Test
  void theOffloaderFallsBackBacksOffDoublingAndProbesAgain() throws Exception {
    AtomicLong now = new AtomicLong(1_000_000);
    float[][] localLogits = {{0f, 1f}};
    int[] sends = {0};
    Offloader<String> offloader = new Offloader<>(
        new OffloadClient("127.0.0.1:" + closedPort(), "m", null, 2000, 2000),
        inputs -> {
          sends[0]++;
          return List.of(new byte[] {7, 7, 7});
        },
        inputs -> localLogits, 1000, 3000, now::get);
    Offloader.Result down = offloader.offload("x", Map.of());
    assertEquals("fallback", down.source());
    assertEquals("refused", down.error().kind());
    assertEquals(3, down.bytesSent());
    assertArrayEquals(new int[] {1}, down.prediction());
    assertEquals(1000, offloader.backoffLeftMs());
    now.addAndGet(999);
    Offloader.Result held = offloader.offload("x", Map.of());
    assertEquals("local", held.source());
    assertTrue(held.backingOff());
    assertNull(held.error());
    assertEquals(1, sends[0]); // the device half did not even run
    assertTrue(offloader.explain().contains("next try in 1 ms"), offloader.explain());
    now.addAndGet(1);
    assertEquals("fallback", offloader.offload("x", Map.of()).source()); // the probe fails
    assertEquals(2, offloader.failures());
    assertEquals(2000, offloader.backoffLeftMs()); // doubled
    now.addAndGet(2000);
    offloader.offload("x", Map.of());
    assertEquals(3000, offloader.backoffLeftMs()); // 4000 capped at maxBackoffMs
    Offloader.Result notAsked = offloader.offload("x", Map.of(), false);
    assertEquals("local", notAsked.source());
    assertFalse(notAsked.backingOff());
    assertEquals(3, sends[0]);
  }
}
