#!/usr/bin/env bash
# What the benchmarks need beyond the test dependencies: Debian's ffmpeg, which
# bench/video_room.py --ffmpeg runs as the reference for the same media work.
# Usage: scripts/install-bench-deps.sh [PYTHON]   (default: python3)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
"$here/install-test-deps.sh" "${1:-python3}"
if ! command -v ffmpeg >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends ffmpeg
fi
