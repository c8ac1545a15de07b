package dev.ponder.demo;

import dev.ponder.core.Manifest;
import dev.ponder.core.engine.StageRunner;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.pytorch.executorch.EValue;
import org.pytorch.executorch.Module;

/**
 * The bundle's stages on ExecuTorch, one sample at a time, for the core's Engine: model.pte's
 * methods stage_0..stage_n are loaded ahead of time; the named tensors every stage leaves are
 * kept between calls, each stage is fed its inputs by name (the MoE tau from the operating
 * point), and the Engine gets the stage's exit log-probs (or the last stage's logits) back.
 */
final class ExecuTorchStages implements StageRunner, AutoCloseable {
  private final Manifest manifest;
  private final Module module;
  private final String tauInput;
  private final Map<String, EValue> tensors = new HashMap<>();

  ExecuTorchStages(Manifest manifest, String ptePath) {
    this.manifest = manifest;
    this.tauInput = Ponder.moeTauInput(manifest);
    this.module = Module.load(ptePath);
    for (int i = 0; i < Ponder.numStages(manifest); i++) {
      module.loadMethod(Ponder.method(manifest, i)); // ahead of time: no load on the first request
    }
  }

  /**
   * Starts a request: drops what the last one left, puts the sample's model inputs (batches of
   * one, by name) and, where the model takes one, the MoE gate's tau.
   */
  void start(Map<String, EValue> inputs, Double tau) {
    tensors.clear();
    tensors.putAll(inputs);
    if (tauInput != null && tau != null) {
      tensors.put(tauInput, Tensors.tau(tau));
    }
  }

  @Override
  public float[] run(int stage) throws Exception {
    List<String> names = Ponder.stageInputs(manifest, stage);
    EValue[] feeds = new EValue[names.size()];
    for (int i = 0; i < feeds.length; i++) {
      EValue v = tensors.get(names.get(i));
      if (v == null) {
        throw new IllegalStateException(
            Ponder.method(manifest, stage) + " takes '" + names.get(i) + "', which neither the "
                + "sample nor an earlier stage gave (have " + tensors.keySet() + ")");
      }
      feeds[i] = v;
    }
    EValue[] out = module.execute(Ponder.method(manifest, stage), feeds);
    List<String> outputs = Ponder.stageOutputs(manifest, stage);
    if (out.length != outputs.size()) {
      throw new IllegalStateException(
          Ponder.method(manifest, stage) + " returned " + out.length + " values; the manifest "
              + "lists " + outputs + ": model.pte and manifest.json are from different exports");
    }
    for (int i = 0; i < out.length; i++) {
      tensors.put(outputs.get(i), out[i]);
    }
    String exit = Ponder.exitOutput(manifest, stage);
    return Tensors.floats(tensors.get(exit != null ? exit : outputs.get(0)));
  }

  @Override
  public void close() {
    module.destroy();
  }
}
