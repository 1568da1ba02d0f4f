#!/usr/bin/env bash
# Installs what the tests need beyond the Python package itself:
# the Debian packages listed in scripts/debian-test-packages.txt and the
# Python test peers in scripts/python-test-packages.txt.
# Usage: scripts/install-test-deps.sh [PYTHON]   (default: python3)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
py=${1:-python3}

mapfile -t debs < <(grep -vE '^\s*(#|$)' "$here/debian-test-packages.txt" || true)
missing=()
for p in "${debs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing Debian packages: ${missing[*]}"
  $sudo apt-get update -qq
  echo "wireshark-common wireshark-common/install-setuid boolean false" | $sudo debconf-set-selections
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

mapfile -t pys < <(grep -vE '^\s*(#|$)' "$here/python-test-packages.txt" || true)
if [ ${#pys[@]} -gt 0 ]; then
  "$py" -m pip install -q "${pys[@]}"
fi
