package dev.ponder.core.policy;

import dev.ponder.core.BundleException;
import dev.ponder.core.Json;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Map;

/**
 * The cost table {@code ponder profile} measures on a device ({@code costs.<backend>.json} beside
 * the bundle): per stage, the median and p90 time of one call at the table's batch and the median
 * energy of one call (null where no probe measured it).
 */
public final class CostTable {
  /** One stage at the table's batch size. */
  public record StageCost(int index, double latencyMs, double latencyP90Ms, Double energyMj) {}

  public final String backend;
  public final String device;
  public final int batch;
  public final List<StageCost> stages; // by index
  public final String energySource; // null: no probe
  public final boolean simulated;

  public CostTable(
      String backend, String device, int batch, List<StageCost> stages, String energySource, boolean simulated) {
    this.backend = backend;
    this.device = device;
    this.batch = batch;
    List<StageCost> sorted = new ArrayList<>(stages);
    sorted.sort(Comparator.comparingInt(StageCost::index));
    this.stages = List.copyOf(sorted);
    this.energySource = energySource;
    this.simulated = simulated;
  }

  /** The table of {@code backend} beside the bundle at {@code bundleRoot}, or null when none. */
  public static CostTable forBackend(Path bundleRoot, String backend) throws BundleException {
    Path file = bundleRoot.resolve("costs." + backend + ".json");
    return Files.isRegularFile(file) ? load(file) : null;
  }

  public static CostTable load(Path file) throws BundleException {
    try {
      return fromJson(Files.readString(file, StandardCharsets.UTF_8));
    } catch (IOException | IllegalArgumentException | ClassCastException | NullPointerException e) {
      throw new BundleException(
          file + " is not a readable ponder cost table (" + e.getMessage()
              + "); measure it again with `ponder profile BUNDLE`", e);
    }
  }

  /** Reads the JSON Python's CostTable.to_dict() writes. */
  @SuppressWarnings("unchecked")
  public static CostTable fromJson(String text) {
    Map<String, Object> d = (Map<String, Object>) Json.parse(text);
    Object version = d.get("version");
    if (!"ponder-costs".equals(d.get("format"))
        || !(version instanceof Json.Number v)
        || v.value() != 1) {
      throw new IllegalArgumentException(
          "not a ponder cost table (format " + d.get("format") + ", version " + version + ")");
    }
    List<StageCost> stages = new ArrayList<>();
    for (Object item : (List<Object>) d.get("stages")) {
      Map<String, Object> s = (Map<String, Object>) item;
      Object energy = s.get("energy_mj");
      stages.add(
          new StageCost(
              (int) ((Json.Number) s.get("index")).longValue(),
              ((Json.Number) s.get("latency_ms")).value(),
              ((Json.Number) s.get("latency_p90_ms")).value(),
              energy == null ? null : ((Json.Number) energy).value()));
    }
    return new CostTable(
        (String) d.get("backend"),
        (String) d.get("device"),
        (int) ((Json.Number) d.get("batch")).longValue(),
        stages,
        (String) d.get("energy_source"),
        Boolean.TRUE.equals(d.get("simulated")));
  }
}
