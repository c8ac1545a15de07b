#!/usr/bin/env bash
# Builds the plain-JVM core (Java 17) and, with `test`, runs its JUnit 5 tests. Needs only
# Debian's default-jdk-headless and junit5 (./deps.sh installs them); no network, no Gradle.
#   ./build.sh          compile into build/main
#   ./build.sh test     compile, then run every test (PONDER_TEST_BUNDLES: bundles Python wrote)
#   ./build.sh test --select-package dev.ponder.core.policy
#                       ... only the tests these JUnit console launcher options select
set -euo pipefail
cd "$(dirname "$0")"
JUNIT=${JUNIT_JAR:-/usr/share/java/junit-platform-console-standalone.jar}
B=${PONDER_JAVA_BUILD:-build}  # where classes go
rm -rf "$B"
mkdir -p "$B/main" "$B/test"
javac --release 17 -Xlint:all -Werror -encoding UTF-8 -d "$B/main" $(find src/main/java -name '*.java')
[ "${1:-}" = test ] || exit 0
if [ ! -f "$JUNIT" ]; then
    echo "JUnit 5 is not installed ($JUNIT is missing): run android_demo/core/deps.sh" >&2
    exit 2
fi
javac --release 17 -encoding UTF-8 -d "$B/test" -cp "$B/main:$JUNIT" $(find src/test/java -name '*.java')
shift
[ $# -gt 0 ] || set -- --scan-class-path
java -jar "$JUNIT" --class-path "$B/main:$B/test" --disable-banner --disable-ansi-colors \
    --details=tree --fail-if-no-tests "$@"
