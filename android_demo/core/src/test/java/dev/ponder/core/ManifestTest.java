package dev.ponder.core;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * On bundles `ponder export` wrote in the same test run (PONDER_TEST_BUNDLES, a path list set by
 * tests/android/test_java_core.py): the manifest digest, file hashes and stages read as Python
 * reads them, and every kind of damage refused with a message.
 */
class ManifestTest {
  @TempDir Path tmp;

  static List<Path> bundles() {
    String paths = System.getenv("PONDER_TEST_BUNDLES");
    assumeTrue(paths != null && !paths.isEmpty(), "PONDER_TEST_BUNDLES is not set");
    List<Path> out = new ArrayList<>();
    for (String p : paths.split(java.io.File.pathSeparator)) {
      out.add(Path.of(p));
    }
    return out;
  }

  @ParameterizedTest
  @MethodSource("bundles")
  void pythonBundlesVerify(Path bundle) throws Exception {
    Manifest m = Manifest.open(bundle, true);
    assertEquals(m.stages.size() - 1, m.numExits());
    for (int i = 0; i < m.stages.size(); i++) {
      assertEquals(i, m.stages.get(i).index());
      assertEquals("stage_" + i, m.stages.get(i).method());
    }
    assertFalse(m.stages.get(m.stages.size() - 1).exit());
    for (Manifest.OperatingPoint p : m.operatingPoints) {
      assertEquals(m.numExits(), p.thresholds().size(), p.name());
    }
  }

  @ParameterizedTest
  @MethodSource("bundles")
  void anEditedManifestIsRefused(Path bundle) throws Exception {
    Path copy = copy(bundle);
    Path manifest = copy.resolve(Manifest.FILE);
    String text = Files.readString(manifest, StandardCharsets.UTF_8);
    Files.writeString(manifest, text.replaceFirst("\"flops\": (\\d)", "\"flops\": 9$1"));
    BundleException e = assertThrows(BundleException.class, () -> Manifest.open(copy, false));
    assertTrue(e.getMessage().contains("was changed after export"), e.getMessage());
  }

  @ParameterizedTest
  @MethodSource("bundles")
  void aDamagedOrMissingFileIsRefused(Path bundle) throws Exception {
    Path copy = copy(bundle);
    Path stage = copy.resolve("onnx").resolve("stage_0.onnx");
    byte[] data = Files.readAllBytes(stage);
    data[data.length / 2] ^= 1;
    Files.write(stage, data);
    Manifest.open(copy, false); // the manifest itself is intact
    BundleException e = assertThrows(BundleException.class, () -> Manifest.open(copy, true));
    assertTrue(e.getMessage().contains("does not match its sha256"), e.getMessage());
    Files.delete(stage);
    e = assertThrows(BundleException.class, () -> Manifest.open(copy, true));
    assertTrue(e.getMessage().contains("is missing; copy the whole bundle"), e.getMessage());
  }

  @ParameterizedTest
  @MethodSource("bundles")
  void anotherSchemaMajorIsRefused(Path bundle) throws Exception {
    Path copy = copy(bundle);
    Path manifest = copy.resolve(Manifest.FILE);
    String text = Files.readString(manifest, StandardCharsets.UTF_8);
    Files.writeString(manifest, text.replace("\"schema_version\": \"1.", "\"schema_version\": \"2."));
    BundleException e = assertThrows(BundleException.class, () -> Manifest.open(copy, false));
    assertTrue(e.getMessage().contains("bundle schema 2.x, this app reads 1.x"), e.getMessage());
  }

  @ParameterizedTest
  @MethodSource("bundles")
  void notABundleSaysSo(Path bundle) {
    BundleException e = assertThrows(BundleException.class, () -> Manifest.open(tmp, true));
    assertTrue(e.getMessage().contains("is not a ponder bundle"), e.getMessage());
  }

  private Path copy(Path bundle) throws IOException {
    Path to = tmp.resolve("copy");
    try (Stream<Path> walk = Files.walk(bundle)) {
      for (Path p : (Iterable<Path>) walk::iterator) {
        Path target = to.resolve(bundle.relativize(p).toString());
        if (Files.isDirectory(p)) {
          Files.createDirectories(target);
        } else {
          Files.copy(p, target);
        }
      }
    }
    return to;
  }
}
