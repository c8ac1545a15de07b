package dev.ponder.core;

import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;

/**
 * A bundle's {@code manifest.json}, read and verified as {@code ponder.runtime.Bundle.open} does:
 * format and schema major version, the manifest's own sha256 over its canonical JSON, and (when
 * asked) every listed file's size and sha256. Holds what the device needs: stages (ExecuTorch
 * method, exit or not, FLOPs), the exit rule, the operating points.
 */
public final class Manifest {
  public static final String FILE = "manifest.json";
  public static final int SCHEMA_MAJOR = 1;

  /**
   * One stage: its ExecuTorch method, whether an exit ends it, its FLOPs per sample, and the
   * names of the tensors it reads (model inputs, earlier stages' outputs, controls such as the MoE
   * tau) and writes.
   */
  public record Stage(
      int index,
      String method,
      boolean exit,
      long flops,
      long cumulativeFlops,
      List<String> inputs,
      List<String> outputs) {
    /** The output the exit rule reads (log-probabilities, {@code exit_logp_*}), or null. */
    public String exitOutput() {
      for (String name : outputs) {
        if (name.startsWith("exit_logp_")) {
          return name;
        }
      }
      return null;
    }
  }

  /**
   * An operating point: one threshold per early exit ({@code Double.POSITIVE_INFINITY}: nobody
   * leaves there), the stage where every sample still running leaves (null: the last), the MoE
   * tau, the expected accuracy and FLOPs fraction, and the share of calibration samples that left
   * at each stage (empty where not measured), as calibration measured them.
   */
  public record OperatingPoint(
      String name,
      List<Double> thresholds,
      Integer maxStage,
      Double moeTau,
      Double accuracy,
      Double flopsFraction,
      List<Double> exitFractions) {
    public OperatingPoint {
      thresholds = List.copyOf(thresholds);
      exitFractions = exitFractions == null ? List.of() : List.copyOf(exitFractions);
    }

    /** The stage where every sample still running leaves. */
    public int lastStage(int numStages) {
      return maxStage == null ? numStages - 1 : Math.min(maxStage, numStages - 1);
    }

    /** A point as a manifest (or Python's OperatingPoint.to_dict()) writes it. */
    public static OperatingPoint fromMap(Map<String, Object> p) throws BundleException {
      List<Double> thresholds = new ArrayList<>();
      for (Object t : list(p, "thresholds")) {
        thresholds.add(t == null ? Double.POSITIVE_INFINITY : ((Json.Number) t).value());
      }
      List<Double> fractions = new ArrayList<>();
      if (p.get("exit_fractions") instanceof List<?> items) {
        for (Object f : items) {
          fractions.add(((Json.Number) f).value());
        }
      }
      return new OperatingPoint(
          string(p, "name"),
          Collections.unmodifiableList(thresholds),
          p.get("max_stage") instanceof Json.Number n ? (int) n.longValue() : null,
          optionalDouble(p, "moe_tau"),
          optionalDouble(p, "accuracy"),
          optionalDouble(p, "flops_fraction"),
          Collections.unmodifiableList(fractions));
    }

    /** Every sample runs the whole model. */
    public static OperatingPoint full(int numExits) {
      return new OperatingPoint(
          "always full",
          Collections.nCopies(numExits, Double.POSITIVE_INFINITY),
          null,
          null,
          null,
          null,
          List.of());
    }
  }

  public final Path root;
  public final String modelId;
  public final String schemaVersion;
  public final String exitRule;
  public final boolean ensembled;
  public final List<Stage> stages;
  public final List<OperatingPoint> operatingPoints;
  public final String sha256;
  private final List<String> inputNames;
  private final String moeTauInput;
  private final Map<String, Object> raw;

  private Manifest(Path root, Map<String, Object> d) throws BundleException {
    this.root = root;
    this.raw = d;
    this.modelId = string(d, "model_id");
    this.schemaVersion = string(d, "schema_version");
    Map<String, Object> rule = object(d, "exit_rule");
    this.exitRule = string(rule, "name");
    this.ensembled = Boolean.TRUE.equals(rule.get("ensembled"));
    List<Stage> stages = new ArrayList<>();
    for (Object item : list(d, "stages")) {
      Map<String, Object> s = asObject(item, "stages[]");
      stages.add(
          new Stage(
              (int) number(s, "index").longValue(),
              string(s, "method"),
              Boolean.TRUE.equals(s.get("exit")),
              number(s, "flops").longValue(),
              number(s, "cumulative_flops").longValue(),
              names(s, "inputs"),
              names(s, "outputs")));
    }
    this.stages = Collections.unmodifiableList(stages);
    List<OperatingPoint> points = new ArrayList<>();
    for (Object item : list(d, "operating_points")) {
      Map<String, Object> p = asObject(item, "operating_points[]");
      if (p.get("thresholds") == null) {
        continue; // a row without thresholds cannot be run (ponder.runtime skips it too)
      }
      OperatingPoint point = OperatingPoint.fromMap(p);
      if (point.thresholds().size() != stages.size() - 1) {
        throw new BundleException(
            FILE + ": operating point '" + point.name() + "' has " + point.thresholds().size()
                + " thresholds for " + (stages.size() - 1) + " early exits; re-export the bundle");
      }
      points.add(point);
    }
    this.operatingPoints = Collections.unmodifiableList(points);
    this.sha256 = string(d, "manifest_sha256");
    List<String> inputs = names(d, "inputs");
    this.inputNames = inputs;
    Object moe = d.get("moe");
    Object tau = moe instanceof Map<?, ?> m ? m.get("tau_input") : null;
    this.moeTauInput = tau instanceof String t ? t : null;
  }

  /** The model's input tensor names, in order (what stage 0 and later stages read). */
  public List<String> inputNames() {
    return inputNames;
  }

  /** The stage input that carries a dynamic-k MoE's tau (an operating point's moeTau), or null. */
  public String moeTauInput() {
    return moeTauInput;
  }

  private static List<String> names(Map<String, Object> d, String key) throws BundleException {
    List<String> out = new ArrayList<>();
    for (Object item : list(d, key)) {
      out.add(string(asObject(item, key + "[]"), "name"));
    }
    return Collections.unmodifiableList(out);
  }

  /** Reads and verifies {@code root/manifest.json}; with {@code verifyFiles}, every file too. */
  public static Manifest open(Path root, boolean verifyFiles) throws BundleException {
    Path path = root.resolve(FILE);
    if (!Files.isRegularFile(path)) {
      throw new BundleException(
          path + " is missing: " + root + " is not a ponder bundle (write one with ponder export)");
    }
    Map<String, Object> d;
    try {
      Object parsed = Json.parse(Files.readString(path, StandardCharsets.UTF_8));
      d = asObject(parsed, FILE);
    } catch (IOException | IllegalArgumentException e) {
      throw new BundleException(path + " cannot be read (" + e.getMessage() + "); re-export", e);
    }
    if (!"ponder-bundle".equals(d.get("format"))) {
      throw new BundleException(path + " is not a ponder bundle manifest (format is not ponder-bundle)");
    }
    String version = string(d, "schema_version");
    int major;
    try {
      major = Integer.parseInt(version.split("\\.")[0]);
    } catch (NumberFormatException e) {
      throw new BundleException(FILE + " has schema_version '" + version + "', expected MAJOR.MINOR");
    }
    if (major != SCHEMA_MAJOR) {
      throw new BundleException(
          "bundle schema "
              + major
              + ".x, this app reads "
              + SCHEMA_MAJOR
              + ".x: "
              + (major > SCHEMA_MAJOR ? "update the app" : "re-export the bundle"));
    }
    String recorded = string(d, "manifest_sha256");
    String actual = digest(d);
    if (!actual.equals(recorded)) {
      throw new BundleException(
          FILE
              + " was changed after export: its sha256 is "
              + actual
              + ", it records "
              + recorded
              + "; re-export the bundle");
    }
    Manifest m = new Manifest(root, d);
    if (verifyFiles) {
      m.verifyFiles();
    }
    return m;
  }

  /** Hex sha256 of the canonical JSON of manifest {@code d} without its manifest_sha256 key. */
  public static String digest(Map<String, Object> d) {
    Map<String, Object> rest = new java.util.LinkedHashMap<>(d);
    rest.remove("manifest_sha256");
    return sha256(Json.canonical(rest).getBytes(StandardCharsets.UTF_8));
  }

  /** Every file the manifest lists: present, of its size, of its sha256. */
  public void verifyFiles() throws BundleException {
    Map<String, Object> files = object(raw, "files");
    for (Map.Entry<String, Object> e : files.entrySet()) {
      String name = e.getKey();
      if (name.isEmpty() || name.startsWith("/") || name.contains("\\") || List.of(name.split("/")).contains("..")) {
        throw new BundleException("bundle path '" + name + "' is not a plain relative path inside the bundle");
      }
      Map<String, Object> entry = asObject(e.getValue(), "files." + name);
      Path file = root.resolve(name);
      if (!Files.isRegularFile(file)) {
        throw new BundleException(file + " is missing; copy the whole bundle folder");
      }
      long bytes = number(entry, "bytes").longValue();
      try {
        long size = Files.size(file);
        if (size != bytes) {
          throw new BundleException(
              file + " has " + size + " bytes, the manifest says " + bytes + "; copy it again");
        }
        String actual = sha256File(file);
        if (!actual.equals(string(entry, "sha256"))) {
          throw new BundleException(file + " does not match its sha256 in the manifest; copy it again");
        }
      } catch (IOException ex) {
        throw new BundleException(file + " cannot be read: " + ex.getMessage(), ex);
      }
    }
  }

  /** The number of early exits (every stage but the last). */
  public int numExits() {
    return stages.size() - 1;
  }

  static String sha256File(Path file) throws IOException {
    MessageDigest md = sha();
    byte[] buffer = new byte[1 << 20];
    try (InputStream in = Files.newInputStream(file)) {
      int n;
      while ((n = in.read(buffer)) > 0) {
        md.update(buffer, 0, n);
      }
    }
    return HexFormat.of().formatHex(md.digest());
  }

  static String sha256(byte[] data) {
    return HexFormat.of().formatHex(sha().digest(data));
  }

  private static MessageDigest sha() {
    try {
      return MessageDigest.getInstance("SHA-256");
    } catch (NoSuchAlgorithmException e) {
      throw new IllegalStateException("this JVM has no SHA-256", e);
    }
  }

  @SuppressWarnings("unchecked")
  private static Map<String, Object> asObject(Object value, String where) throws BundleException {
    if (!(value instanceof Map)) {
      throw new BundleException(FILE + ": " + where + " must be a JSON object");
    }
    return (Map<String, Object>) value;
  }

  private static Map<String, Object> object(Map<String, Object> d, String key) throws BundleException {
    return asObject(d.get(key), key);
  }

  private static List<?> list(Map<String, Object> d, String key) throws BundleException {
    Object value = d.get(key);
    if (!(value instanceof List)) {
      throw new BundleException(FILE + ": " + key + " must be a JSON array");
    }
    return (List<?>) value;
  }

  private static String string(Map<String, Object> d, String key) throws BundleException {
    Object value = d.get(key);
    if (!(value instanceof String)) {
      throw new BundleException(FILE + ": " + key + " must be a string");
    }
    return (String) value;
  }

  private static Json.Number number(Map<String, Object> d, String key) throws BundleException {
    Object value = d.get(key);
    if (!(value instanceof Json.Number)) {
      throw new BundleException(FILE + ": " + key + " must be a number");
    }
    return (Json.Number) value;
  }

  private static Double optionalDouble(Map<String, Object> d, String key) {
    Object value = d.get(key);
    return value instanceof Json.Number ? ((Json.Number) value).value() : null;
  }
}
