package dev.ponder.core.offload;

import dev.ponder.core.Json;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.ConnectException;
import java.net.HttpURLConnection;
import java.net.MalformedURLException;
import java.net.NoRouteToHostException;
import java.net.SocketTimeoutException;
import java.net.URL;
import java.net.UnknownHostException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;

/**
 * Calls {@code ponder serve} (or any Open Inference Protocol server) for one model, as Python's
 * {@code OffloadClient} does: binary tensor requests, timeouts, one reconnect, and an estimate of
 * the link from its own transfers. Any failure is an {@link OffloadException} whose kind says
 * which, so that the caller can answer locally (see {@link Offloader}).
 *
 * <p>Only {@link HttpURLConnection}, so that the same class runs on Android (which has no
 * java.net.http); the platform keeps connections alive between calls. Safe to share between
 * threads.
 */
public final class OffloadClient {
  static final String LOGITS = "logits";
  private static final int MAX_ANSWER_BYTES = 256 << 20;

  private final String baseUrl;
  private final String model;
  private final String bearerToken;
  private final int connectTimeoutMs;
  private final int readTimeoutMs;
  private final LinkEstimate link = new LinkEstimate();
  private volatile Double serverMillis;
  private volatile long lastAnswerBytes;

  /**
   * @param baseUrl the server, "http://host:port" ("host:port" means http; https works too)
   * @param model the model's name on the server ({@code model_id} of the split bundle)
   * @param bearerToken sent as "Authorization: Bearer ..."; null to send none
   * @param connectTimeoutMs the longest wait for a connection
   * @param readTimeoutMs the longest wait for each read of the answer
   */
  public OffloadClient(
      String baseUrl, String model, String bearerToken, int connectTimeoutMs, int readTimeoutMs) {
    String url = baseUrl.contains("://") ? baseUrl : "http://" + baseUrl;
    while (url.endsWith("/")) {
      url = url.substring(0, url.length() - 1);
    }
    try {
      URL parsed = new URL(url);
      if (!(parsed.getProtocol().equals("http") || parsed.getProtocol().equals("https"))
          || parsed.getHost().isEmpty()) {
        throw new MalformedURLException("not http(s)");
      }
    } catch (MalformedURLException e) {
      throw new IllegalArgumentException(
          "'" + baseUrl + "': give the server as http://host:port", e);
    }
    if (model == null || model.isEmpty() || model.contains("/")) {
      throw new IllegalArgumentException(
          "model '" + model + "': give the model's name on the server (the bundle's model_id)");
    }
    if (connectTimeoutMs <= 0 || readTimeoutMs <= 0) {
      throw new IllegalArgumentException(
          "timeouts must be > 0 ms (0 would wait forever), got connect " + connectTimeoutMs
              + ", read " + readTimeoutMs);
    }
    this.baseUrl = url;
    this.model = model;
    this.bearerToken = bearerToken;
    this.connectTimeoutMs = connectTimeoutMs;
    this.readTimeoutMs = readTimeoutMs;
  }

  public String baseUrl() {
    return baseUrl;
  }

  public String model() {
    return model;
  }

  /** The link as measured by this client's transfers. */
  public LinkEstimate link() {
    return link;
  }

  /** The server's compute time for the last answer (ms, as it reported), or null. */
  public Double lastServerMillis() {
    return serverMillis;
  }

  /** The size of the last successful answer's body in bytes. */
  public long lastAnswerBytes() {
    return lastAnswerBytes;
  }

  /** Whether the server answers GET /v2/health/live with 200; never throws. */
  public boolean live() {
    try {
      return request("GET", "/v2/health/live", null, null).status == 200;
    } catch (OffloadException e) {
      return false;
    }
  }

  /**
   * Logits [N][C] for offload payloads (one per sample, as {@code SplitBundle.send} writes them),
   * sent back to back as {@code payload} (UINT8) with {@code payload_sizes} (INT64).
   *
   * @param parameters the split's parameters for the payloads' keep and codec (split.json's
   *     params with "keep" and "codec", as Python's {@code SplitBundle.params})
   */
  public float[][] inferPayloads(List<byte[]> payloads, Map<String, Object> parameters)
      throws OffloadException {
    if (payloads.isEmpty()) {
      throw new IllegalArgumentException("no payloads to send");
    }
    ByteArrayOutputStream joined = new ByteArrayOutputStream();
    long[] sizes = new long[payloads.size()];
    for (int i = 0; i < sizes.length; i++) {
      joined.writeBytes(payloads.get(i));
      sizes[i] = payloads.get(i).length;
    }
    byte[] data = joined.toByteArray();
    return logits(
        infer(
            List.of(Tensor.uint8("payload", data), Tensor.int64("payload_sizes", sizes)),
            parameters));
  }

  /**
   * Logits [B][C] for decoded tokens [B, K, D] (row-major in {@code tokens}) and their mask
   * [B, K] (null: every token is real), for a device without ponder's codecs.
   *
   * @param parameters the split's parameters (split_block, selector, device_sha256): the server
   *     refuses decoded tokens without them
   */
  public float[][] inferTokens(
      float[] tokens, long[] shape, long[] mask, Map<String, Object> parameters)
      throws OffloadException {
    if (shape.length != 3) {
      throw new IllegalArgumentException(
          "tokens are [B, K, D]; got shape " + Arrays.toString(shape));
    }
    List<Tensor> inputs = new ArrayList<>();
    inputs.add(Tensor.fp32("tokens", tokens, shape));
    if (mask != null) {
      inputs.add(Tensor.int64("attention_mask", mask, shape[0], shape[1]));
    }
    return logits(infer(inputs, parameters));
  }

  /**
   * One inference: {@code inputs} as binary tensors, outputs asked for as binary; the outputs
   * the server answered (binary or JSON), in its order.
   */
  public Tensor[] infer(List<Tensor> inputs, Map<String, Object> parameters)
      throws OffloadException {
    Protocol.Body body = Protocol.encodeRequest(inputs, parameters);
    long start = System.nanoTime();
    Answer answer = request("POST", "/v2/models/" + model + "/infer", body.bytes(), body);
    double seconds = (System.nanoTime() - start) / 1e9;
    long bytes = (long) body.bytes().length + answer.body.length;
    if (answer.status != 200) {
      link.add(seconds, bytes);
      throw statusError(answer.status, answer.body);
    }
    Protocol.Response response = Protocol.decodeResponse(answer.body, answer.headerLength);
    // the server says how long it computed (ponder serve does): the link is the rest
    Object reported = response.parameters().get("server_ms");
    Double server = reported instanceof Json.Number n ? n.value() : null;
    serverMillis = server;
    lastAnswerBytes = answer.body.length;
    link.add(Math.max(seconds - (server == null ? 0 : server / 1e3), 1e-6), bytes);
    return response.outputs().toArray(new Tensor[0]);
  }

  /** The "logits" output as [N][C] floats. */
  static float[][] logits(Tensor[] outputs) throws OffloadException {
    for (Tensor t : outputs) {
      if (t.name().equals(LOGITS)) {
        if (t.shape().length != 2 || !t.datatype().equals("FP32")) {
          throw new OffloadException(
              "the server's answer is not usable: logits are " + t.datatype() + " "
                  + Arrays.toString(t.shape()) + ", not FP32 [N, C]",
              OffloadException.PROTOCOL,
              200);
        }
        return t.matrix();
      }
    }
    List<String> names = new ArrayList<>();
    for (Tensor t : outputs) {
      names.add(t.name());
    }
    throw new OffloadException(
        "the server's answer is not usable: it has no 'logits' output, only " + names,
        OffloadException.PROTOCOL,
        200);
  }

  /** An HTTP error status as Python's _status_error maps it, with the server's message. */
  static OffloadException statusError(int status, byte[] body) {
    String message;
    try {
      Object parsed = Json.parse(new String(body, StandardCharsets.UTF_8));
      Object error = parsed instanceof Map<?, ?> m ? m.get("error") : null;
      message = error == null ? "" : String.valueOf(error);
    } catch (IllegalArgumentException e) {
      String text = new String(body, StandardCharsets.UTF_8);
      message = text.length() <= 200 ? text : text.substring(0, 200);
    }
    String kind =
        status == 401
            ? OffloadException.UNAUTHORIZED
            : status >= 500 ? OffloadException.SERVER : OffloadException.REJECTED;
    return new OffloadException("the server answered " + status + ": " + message, kind, status);
  }

  private record Answer(int status, byte[] body, String headerLength) {}

  /**
   * One request, with one reconnect as Python's client does: a kept-alive connection the server
   * has closed fails once; a refused connection or a timeout is not tried again. (The JDK may
   * itself resend a request once on a stale kept-alive connection, before this reconnect: an
   * inference may reach the server twice, which is harmless as it changes nothing there.)
   */
  private Answer request(String method, String path, byte[] body, Protocol.Body binary)
      throws OffloadException {
    try {
      return send(method, path, body, binary);
    } catch (ConnectException | SocketTimeoutException | TooLarge e) {
      throw failure(e);
    } catch (IOException e) {
      try { // one reconnect
        return send(method, path, body, binary);
      } catch (IOException again) {
        throw failure(again);
      }
    }
  }

  private Answer send(String method, String path, byte[] body, Protocol.Body binary)
      throws IOException {
    HttpURLConnection conn = (HttpURLConnection) new URL(baseUrl + path).openConnection();
    boolean ok = false;
    try {
      conn.setConnectTimeout(connectTimeoutMs);
      conn.setReadTimeout(readTimeoutMs);
      conn.setUseCaches(false);
      conn.setInstanceFollowRedirects(false);
      conn.setRequestMethod(method);
      if (bearerToken != null) {
        conn.setRequestProperty("Authorization", "Bearer " + bearerToken);
      }
      conn.setRequestProperty("Accept", "application/octet-stream, application/json");
      if (body != null) {
        conn.setDoOutput(true);
        conn.setRequestProperty("Content-Type", "application/octet-stream");
        conn.setRequestProperty(Protocol.HEADER_LENGTH, Integer.toString(binary.headerLength()));
        // not setFixedLengthStreamingMode: in streaming mode the JDK drops the body of a 401
        // (the server's message); buffered, it sets Content-Length itself
        try (OutputStream out = conn.getOutputStream()) {
          out.write(body);
        }
      }
      int status = conn.getResponseCode();
      InputStream in = status >= 400 ? conn.getErrorStream() : conn.getInputStream();
      byte[] answer = in == null ? new byte[0] : readAll(in);
      String length = conn.getHeaderField(Protocol.HEADER_LENGTH);
      ok = true;
      return new Answer(status, answer, length);
    } finally {
      if (!ok) {
        conn.disconnect(); // a failed connection is not kept for the next request
      }
    }
  }

  private static byte[] readAll(InputStream in) throws IOException {
    try (in) {
      ByteArrayOutputStream out = new ByteArrayOutputStream();
      byte[] chunk = new byte[16384];
      int n;
      while ((n = in.read(chunk)) > 0) {
        out.write(chunk, 0, n);
        if (out.size() > MAX_ANSWER_BYTES) {
          throw new TooLarge("the answer is over " + MAX_ANSWER_BYTES + " bytes");
        }
      }
      return out.toByteArray();
    }
  }

  /** An answer over MAX_ANSWER_BYTES: the server's fault, not the link's. */
  private static final class TooLarge extends IOException {
    private static final long serialVersionUID = 1L;

    TooLarge(String message) {
      super(message);
    }
  }

  private OffloadException failure(IOException e) {
    String where = baseUrl;
    if (e instanceof TooLarge) {
      return new OffloadException(
          "the server's answer is not usable: " + e.getMessage(), OffloadException.PROTOCOL, null, e);
    }
    if (e instanceof SocketTimeoutException) {
      return new OffloadException(
          "no answer from " + where + " within " + (e.getMessage() != null
              && e.getMessage().contains("connect") ? connectTimeoutMs : readTimeoutMs) + " ms",
          OffloadException.TIMEOUT, null, e);
    }
    String why = e instanceof UnknownHostException ? "unknown host " + e.getMessage()
        : e instanceof NoRouteToHostException || e instanceof ConnectException ? e.getMessage()
        : e.toString();
    return new OffloadException(
        "cannot reach " + where + ": " + why + " (is the server running, and is the address "
            + "right?)", OffloadException.REFUSED, null, e);
  }
}
