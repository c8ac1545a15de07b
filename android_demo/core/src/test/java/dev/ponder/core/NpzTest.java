package dev.ponder.core;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * On .npz files numpy wrote in the same test run (PONDER_TEST_NPZ, a path list set by
 * tests/android/test_java_npz.py: the same arrays through np.savez and np.savez_compressed):
 * float32, int64 and int32 arrays read as numpy wrote them, rows as batches of one, and arrays
 * of other dtypes or layouts kept by name but refused when their data is asked for.
 */
class NpzTest {
  @TempDir Path tmp;

  static List<Path> files() {
    String paths = System.getenv("PONDER_TEST_NPZ");
    assumeTrue(paths != null && !paths.isEmpty(), "PONDER_TEST_NPZ is not set");
    List<Path> out = new ArrayList<>();
    for (String p : paths.split(java.io.File.pathSeparator)) {
      out.add(Path.of(p));
    }
    return out;
  }

  @ParameterizedTest
  @MethodSource("files")
  void readsTheDtypesAndShapesNumpyWrote(Path file) throws Exception {
    Map<String, Npz.Array> a = Npz.read(file);
    Npz.Array f32 = a.get("f32");
    assertEquals("float32", f32.dtype());
    assertArrayEquals(new long[] {3, 4}, f32.shape());
    float[] f = f32.floats();
    for (int i = 0; i < 12; i++) {
      assertEquals(i / 8.0f, f[i]);
    }
    assertEquals("int64", a.get("i64").dtype());
    assertArrayEquals(new long[] {-1L, 1L << 40, 3L, -(1L << 62)}, a.get("i64").longs());
    assertArrayEquals(new int[] {7, -8, Integer.MAX_VALUE}, a.get("i32").ints());
    assertArrayEquals(new long[] {3}, a.get("i32").shape());
    Npz.Array scalar = a.get("scalar");
    assertArrayEquals(new long[] {}, scalar.shape());
    assertArrayEquals(new float[] {2.5f}, scalar.floats());
    assertArrayEquals(new long[] {0, 3}, a.get("empty").shape());
    assertEquals(0, a.get("empty").floats().length);
    assertEquals(
        List.of("f32", "i64", "i32", "scalar", "empty", "flags", "f64", "fortran", "big"),
        List.copyOf(a.keySet()));
  }

  @ParameterizedTest
  @MethodSource("files")
  void aRowIsOneSampleAsABatchOfOne(Path file) throws Exception {
    Map<String, Npz.Array> a = Npz.read(file);
    Npz.Array row = a.get("f32").row(2);
    assertArrayEquals(new long[] {1, 4}, row.shape());
    assertArrayEquals(new float[] {1.0f, 1.125f, 1.25f, 1.375f}, row.floats());
    assertArrayEquals(new long[] {3L, -(1L << 62)}, a.get("i64").row(1).longs());
    assertArrayEquals(new int[] {-8}, a.get("i32").row(1).ints());
    assertThrows(IndexOutOfBoundsException.class, () -> a.get("f32").row(3));
    assertThrows(IllegalArgumentException.class, () -> a.get("scalar").row(0));
    assertThrows(IllegalStateException.class, () -> a.get("f32").longs());
  }

  @ParameterizedTest
  @MethodSource("files")
  void otherDtypesAndLayoutsAreKeptButNotRead(Path file) throws Exception {
    Map<String, Npz.Array> a = Npz.read(file);
    assertEquals("|b1", a.get("flags").dtype());
    assertArrayEquals(new long[] {2}, a.get("flags").shape());
    assertEquals("<f8", a.get("f64").dtype());
    assertEquals(">i4", a.get("big").dtype());
    for (String name : List.of("flags", "f64", "big", "fortran")) {
      UnsupportedOperationException e =
          assertThrows(UnsupportedOperationException.class, () -> a.get(name).floats());
      assertTrue(e.getMessage().contains(name), e.getMessage());
    }
    UnsupportedOperationException e =
        assertThrows(UnsupportedOperationException.class, () -> a.get("fortran").row(0));
    assertTrue(e.getMessage().contains("Fortran order"), e.getMessage());
  }

  @Test
  void whatIsNotNpzOrNpyIsRefusedWithAMessage() throws Exception {
    Path text = tmp.resolve("samples.npz");
    Files.writeString(text, "not a zip", StandardCharsets.UTF_8);
    IOException e = assertThrows(IOException.class, () -> Npz.read(text));
    assertTrue(e.getMessage().contains("samples.npz"), e.getMessage());
    byte[] junk = "PK not numpy".getBytes(StandardCharsets.US_ASCII);
    e = assertThrows(IOException.class, () -> Npz.readNpy("x", junk));
    assertTrue(e.getMessage().contains("magic"), e.getMessage());
    byte[] cut = {(byte) 0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, 100, 0, '{'};
    e = assertThrows(IOException.class, () -> Npz.readNpy("x", cut));
    assertTrue(e.getMessage().contains("cut short"), e.getMessage());
  }
}
