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
 * the model up to the split block, returning hidden [1, T, D] and token scores), sends every
 * real token (keep 1.0, in position order) as decoded tokens [1, K, D] with the split's
 * parameters, and gets the logits back.
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
  private final OffloadClient client;

  /** The split bundle at {@code root} (with split.json and edge.pte), offloading to {@code url}. */
  SplitOffload(Path root, String url, String token) throws IOException {
    Object parsed =
        Ponder.parseJson(Files.readString(root.resolve(SPLIT_FILE), StandardCharsets.UTF_8));
    Map<?, ?> split = object(parsed, SPLIT_FILE);
    modelId = String.valueOf(split.get("model_id"));
    Map<?, ?> splitSection = object(split.get("split"), "split");
    for (Map.Entry<?, ?> e : object(splitSection.get("params"), "split.params").entrySet()) {
      params.put(String.valueOf(e.getKey()), Ponder.plain(e.getValue()));
    }
    params.put("keep", 1.0);
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

  boolean live() {
    return Ponder.live(client);
  }

  /** Logits [C] for sample {@code i}: the device half here, the cloud half on the server. */
  float[] logits(Samples samples, int i) throws OffloadException {
    Map<String, EValue> sample = samples.get(i);
    EValue[] feeds = new EValue[edgeInputs.size()];
    for (int k = 0; k < feeds.length; k++) {
      feeds[k] = sample.get(edgeInputs.get(k));
      if (feeds[k] == null) {
        throw new IllegalStateException("the device half takes '" + edgeInputs.get(k)
            + "', which the local bundle's samples lack");
      }
    }
    EValue[] out = edge.execute(EDGE_METHOD, feeds);
    float[] hidden = Tensors.floats(out[0]);
    long[] shape = Tensors.shape(out[0]); // [1, T, D]
    int t = (int) shape[1];
    int d = (int) shape[2];
    boolean[] real = new boolean[t];
    java.util.Arrays.fill(real, true);
    Npz.Array mask = edgeInputs.contains(MASK) ? samples.raw(MASK, i) : null;
    if (mask != null) {
      for (int p = 0; p < t; p++) {
        real[p] = "int64".equals(mask.dtype()) ? mask.longs()[p] != 0 : mask.ints()[p] != 0;
      }
    }
    int k = 0;
    for (boolean r : real) {
      k += r ? 1 : 0;
    }
    if (k == 0) {
      real[0] = true; // as ponder's selection: at least the pooling token
      k = 1;
    }
    float[] tokens = new float[k * d];
    int row = 0;
    for (int p = 0; p < t; p++) {
      if (real[p]) {
        System.arraycopy(hidden, p * d, tokens, row++ * d, d);
      }
    }
    return Ponder.inferTokens(client, tokens, new long[] {1, k, d}, null, params)[0];
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
