package dev.ponder.demo;

import dev.ponder.core.Npz;
import java.io.IOException;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.pytorch.executorch.EValue;

/**
 * The requests the demo sends: rows of the bundle's samples.npz (which ponder export writes:
 * the model inputs, batched, plus control inputs and every stage's eager outputs), one row per
 * request, cycling.
 */
final class Samples {
  static final String FILE = "samples.npz";

  private final Map<String, Npz.Array> inputs = new LinkedHashMap<>();
  private final int rows;
  private final Double defaultTau;

  /** tauInput: the MoE tau input's name (null: none), whose export-time value the file holds. */
  Samples(Path bundle, List<String> inputNames, String tauInput) throws IOException {
    Map<String, Npz.Array> all = Ponder.readNpz(bundle.resolve(FILE));
    Npz.Array tau = tauInput == null ? null : all.get(tauInput);
    defaultTau = tau == null || tau.size() != 1 ? null : (double) tau.floats()[0];
    int n = Integer.MAX_VALUE;
    for (String name : inputNames) {
      Npz.Array a = all.get(name);
      if (a == null) {
        throw new IOException(bundle.resolve(FILE) + " has no array '" + name
            + "' (the model's inputs are " + inputNames + "); re-export the bundle");
      }
      inputs.put(name, a);
      n = Math.min(n, (int) a.shape()[0]);
    }
    rows = inputNames.isEmpty() ? 0 : n;
  }

  /** The MoE tau the bundle was exported with (null: none): for points that do not set one. */
  Double defaultTau() {
    return defaultTau;
  }

  int size() {
    return rows;
  }

  /** Sample {@code i % size()}: each model input as a batch of one, by name. */
  Map<String, EValue> get(int i) {
    Map<String, EValue> out = new LinkedHashMap<>();
    for (Map.Entry<String, Npz.Array> e : inputs.entrySet()) {
      out.put(e.getKey(), Tensors.of(e.getValue().row(i % rows)));
    }
    return out;
  }

  /** The raw rows, for the offload path's attention mask. */
  Npz.Array raw(String name, int i) {
    Npz.Array a = inputs.get(name);
    return a == null ? null : a.row(i % rows);
  }
}
