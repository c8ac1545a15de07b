package dev.ponder.demo;

import dev.ponder.core.Npz;
import dev.ponder.core.offload.OffloadClient;
import dev.ponder.core.offload.OffloadException;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.pytorch.executorch.EValue;
import org.pytorch.executorch.Module;

/**
 * Offloading a request to {@code ponder serve}, which serves the cloud half of a split bundle
 * (ponder export --split). The phone runs the split's device half (edge.pte, method "edge":
 * the model up to the split block, returning hidden [1, T, D] and token scores), keeps the
 * tokens and encodes the payload at the keep ratio and codec the offload policy chose (the
 * core's Payloads: byte for byte what Python's SplitBundle.send writes, uncompressed), sends it
 * with the split's parameters, and gets the logits back.
 */
final class SplitOffload implements AutoCloseable {
  static final String SPLIT_FILE = "split.json";
  static final String EDGE_PTE = "edge.pte";
  static final String EDGE_METHOD = "edge";
  static final String MASK = "attention_mask";

  private final Module edge;
  private final List<String> edgeInputs = new ArrayList<>();
  private final Map<String, Object> params = new LinkedHashMap<>();
  private final String modelId;
  private final String anchor;
  final OffloadClient client;
  final List<dev.ponder.core.policy.OffloadPoint> points;
  /** The device half's time of the last call (edge and payload), ms; -1 when it did not run. */
  double edgeMs;

  /** The split bundle at {@code root} (with split.json and edge.pte), offloading to {@code url}. */
  SplitOffload(Path root, String url, String token) throws IOException {
    Object parsed =
        Ponder.parseJson(Files.readString(root.resolve(SPLIT_FILE), StandardCharsets.UTF_8));
    Map<?, ?> split = object(parsed, SPLIT_FILE);
    modelId = String.valueOf(split.get("model_id"));
    Map<?, ?> splitSection = object(split.get("split"), "split");
    for (Map.Entry<?, ?> e : object(splitSection.get("params"), "split.params").entrySet()) {
      params.put(String.valueOf(e.getKey()), e.getValue()); // numbers written back as read
    }
    anchor = String.valueOf(splitSection.get("anchor"));
    points = Ponder.offloadPoints(split.get("offload_points"));
    Object inputs = object(split.get("edge"), "edge").get("inputs");
    if (!(inputs instanceof List<?> list)) {
      throw new IOException(SPLIT_FILE + ": edge.inputs must be a list; re-export the split bundle");
    }
    for (Object input : list) {
      edgeInputs.add(String.valueOf(object(input, "edge.inputs[]").get("name")));
    }
    Path pte = root.resolve(EDGE_PTE);
    if (!Files.isRegularFile(pte)) {
      throw new IOException(pte + " is missing: export the split bundle with ExecuTorch");
    }
    edge = Module.load(pte.toString());
    edge.loadMethod(EDGE_METHOD);
    client = Ponder.offloadClient(url, modelId, token);
  }

  /**
   * Logits [C] for sample {@code i} at {@code keep} and {@code codec}: the device half here
   * (its time in {@link #edgeMs}), the cloud half on the server.
   */
  float[] logits(Samples samples, int i, double keep, String codec) throws OffloadException {
    edgeMs = -1; // until the device half has run
    long start = System.nanoTime();
    Map<String, EValue> sample = samples.get(i);
    EValue[] feeds = new EValue[edgeInputs.size()];
    for (int k = 0; k < feeds.length; k++) {
      feeds[k] = sample.get(edgeInputs.get(k));
      if (feeds[k] == null) {
        throw new IllegalStateException("the device half takes '" + edgeInputs.get(k)
            + "', which the local bundle's samples lack");
      }
    }
    EValue[] out = edge.execute(EDGE_METHOD, feeds); // hidden [1, T, D], token scores [1, T]
    float[] hidden = Tensors.floats(out[0]);
    long[] shape = Tensors.shape(out[0]);
    float[] scores = Tensors.floats(out[1]);
    int t = (int) shape[1];
    long[] mask = null;
    Npz.Array m = edgeInputs.contains(MASK) ? samples.raw(MASK, i) : null;
    if (m != null) {
      mask = new long[t];
      for (int p = 0; p < t; p++) {
        mask[p] = "int64".equals(m.dtype()) ? m.longs()[p] : m.ints()[p];
      }
    }
    List<byte[]> payloads =
        Ponder.payloads(hidden, scores, mask, t, (int) shape[2], keep, codec, anchor, params);
    edgeMs = (System.nanoTime() - start) / 1e6;
    return Ponder.inferPayloads(client, payloads, params, keep, codec);
  }

  @Override
  public void close() {
    edge.destroy();
  }

  private static Map<?, ?> object(Object value, String where) throws IOException {
    if (!(value instanceof Map<?, ?> map)) {
      throw new IOException(SPLIT_FILE + ": " + where + " must be a JSON object");
    }
    return map;
  }
}
