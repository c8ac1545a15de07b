#!/usr/bin/env bash
# Compile check of the Android demo app on a machine without the Android SDK: javac compiles the
# app's sources (src/main/java) against the core's sources (../core/src/main/java) and the
# signature-only stand-ins of the Android and ExecuTorch classes it uses (compile-stubs/, never
# packaged), plus an R class generated from res/layout (so every R.id/R.layout the code names
# exists in a layout). Checks that AndroidManifest.xml and the resources are well-formed XML.
# Nothing is packaged or run: this is not an Android build (see ../README.md for that).
#   ./check.sh     exits non-zero with javac's errors when the app does not compile
set -euo pipefail
cd "$(dirname "$0")"
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
for xml in src/main/AndroidManifest.xml $(find src/main/res -name '*.xml'); do
    python3 -c 'import sys, xml.dom.minidom as m; m.parse(sys.argv[1])' "$xml" \
        || { echo "$xml is not well-formed XML" >&2; exit 1; }
done
# R: one int per layout file and per android:id="@+id/..." in the layouts (values are arbitrary)
mkdir -p "$OUT/gen/dev/ponder/demo"
{
    echo "package dev.ponder.demo;"
    echo "public final class R {"
    echo "  public static final class layout {"
    n=0x7f0b0000
    for f in src/main/res/layout/*.xml; do
        echo "    public static final int $(basename "$f" .xml) = $((n++));"
    done
    echo "  }"
    echo "  public static final class id {"
    n=0x7f080000
    for id in $(grep -ho '@+id/[A-Za-z0-9_]*' src/main/res/layout/*.xml | sed 's|@+id/||' | sort -u); do
        echo "    public static final int $id = $((n++));"
    done
    echo "  }"
    echo "}"
} > "$OUT/gen/dev/ponder/demo/R.java"
# the stand-ins and the core first (the core as the app's Gradle build compiles it: Java 17)
mkdir -p "$OUT/stubs" "$OUT/core" "$OUT/app"
javac --release 17 -encoding UTF-8 -d "$OUT/stubs" $(find compile-stubs -name '*.java')
javac --release 17 -encoding UTF-8 -d "$OUT/core" \
    $(find ../core/src/main/java -name '*.java')
javac --release 17 -Xlint:all -Werror -encoding UTF-8 -d "$OUT/app" -cp "$OUT/stubs:$OUT/core" \
    "$OUT/gen/dev/ponder/demo/R.java" $(find src/main/java -name '*.java')
echo "android_demo/app: $(find src/main/java -name '*.java' | wc -l) app sources compile against the core and the stand-ins"
