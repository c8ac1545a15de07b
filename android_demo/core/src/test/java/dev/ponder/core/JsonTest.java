package dev.ponder.core;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;

class JsonTest {
  // Both strings written by Python: json.dumps(d, indent=1, ensure_ascii=False) and
  // json.dumps(d, sort_keys=True, separators=(",", ":"), ensure_ascii=False) of the same dict.
  static final String PYTHON_INDENTED =
      "{\n \"b\": [\n  1,\n  2.5,\n  null,\n  true\n ],\n \"a\": {\n"
          + "  \"z\": \"\u00e9\\\"\\\\\\n\\t\\u0001\",\n  \"y\": 1e-05\n },\n \"c\": 0.0001\n}";
  static final String PYTHON_CANONICAL =
      "{\"a\":{\"y\":1e-05,\"z\":\"\u00e9\\\"\\\\\\n\\t\\u0001\"},\"b\":[1,2.5,null,true],"
          + "\"c\":0.0001}";

  @Test
  void canonicalFormIsPythons() {
    assertEquals(PYTHON_CANONICAL, Json.canonical(Json.parse(PYTHON_INDENTED)));
  }

  @Test
  void valuesAreRead() {
    @SuppressWarnings("unchecked")
    Map<String, Object> d = (Map<String, Object>) Json.parse(PYTHON_INDENTED);
    List<?> b = (List<?>) d.get("b");
    assertEquals(2.5, ((Json.Number) b.get(1)).value());
    assertEquals(null, b.get(2));
    assertEquals(Boolean.TRUE, b.get(3));
    @SuppressWarnings("unchecked")
    Map<String, Object> a = (Map<String, Object>) d.get("a");
    assertEquals("\u00e9\"\\\n\t\u0001", a.get("z"));
    assertEquals(1e-5, ((Json.Number) a.get("y")).value());
  }

  @Test
  void malformedDocumentsAreRefusedWithThePlace() {
    for (String bad : List.of("{", "{\"a\":}", "[1,]", "{\"a\":1,\"a\":2}", "\"x", "1 2", "tru")) {
      IllegalArgumentException e =
          assertThrows(IllegalArgumentException.class, () -> Json.parse(bad), bad);
      assertEquals(true, e.getMessage().contains("at character"), e.getMessage());
    }
  }
}
