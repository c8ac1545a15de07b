#!/usr/bin/env bash
# Installs what the JVM core builds and tests with, from Debian, where it is missing:
# default-jdk-headless (Java 17) and junit5 (the console launcher).
set -euo pipefail
need=()
command -v javac >/dev/null || need+=(default-jdk-headless)
[ -f /usr/share/java/junit-platform-console-standalone.jar ] || need+=(junit5)
[ ${#need[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing ${need[*]} from Debian for android_demo/core"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
