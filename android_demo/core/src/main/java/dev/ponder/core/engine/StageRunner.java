package dev.ponder.core.engine;

/**
 * Runs one stage of a bundle for one sample; the app implements it with ExecuTorch (keeping the
 * named tensors between stages: each stage reads its {@code Stage.inputs()} by name and leaves
 * its {@code outputs()}), the tests with recorded outputs.
 */
public interface StageRunner {
  /**
   * Runs stage {@code stage} on what earlier stages left and returns the values the engine reads:
   * the exit output ({@code Stage.exitOutput()}, log-probabilities [C]) where the stage has one,
   * else its first output (the last stage's logits [C]).
   */
  float[] run(int stage) throws Exception;
}
