#!/usr/bin/env bash
# Installs what the project needs on a fresh machine, and nothing twice:
#   Debian packages (redis-server, etcd-server, Node.js for Azurite, restic and borgbackup for
#   `make bench-volume`, prometheus for the alert rules' tests and the dashboard's, bubblewrap for the dev
#   kubelet's exec), the Kubernetes binaries built from Debian's source package (scripts/build-kubernetes.sh),
#   Azurite from the npm registry into the cache, and the Python virtualenv with the project installed in
#   editable mode.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE_DIR="${DAVIT_CACHE:-$HOME/.cache/davit}"
AZURITE_VERSION=3.37.0
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v etcd >/dev/null || missing+=(etcd-server)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
command -v restic >/dev/null || missing+=(restic)
# borgbackup: the second peer of `make bench-volume`.
command -v borg >/dev/null || missing+=(borgbackup)
# GNU time: the peak RSS of each process `make bench-volume` measures.
[ -x /usr/bin/time ] || missing+=(time)
# Prometheus and promtool: the alert rules' tests and the dashboard test's real Prometheus.
command -v promtool >/dev/null || missing+=(prometheus)
# bubblewrap: the sandbox the dev kubelet runs exec commands in (devstack/exec_server.py).
command -v bwrap >/dev/null || missing+=(bubblewrap)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# Debian starts redis-server (and prometheus) as a service on install where it can; the project runs its
# own on a free port instead, and leaves the machine's as it found it.

bash scripts/build-kubernetes.sh

if [ ! -x "$CACHE_DIR/azurite/node_modules/.bin/azurite-blob" ]; then
  echo "installing azurite $AZURITE_VERSION"
  mkdir -p "$CACHE_DIR/azurite"
  npm install --no-audit --no-fund --loglevel=error --prefix "$CACHE_DIR/azurite" "azurite@$AZURITE_VERSION"
fi

PYTHON=""
for candidate in python3.11 python3; do
  if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    PYTHON="$candidate"; break
  fi
done
if [ -z "$PYTHON" ]; then
  echo "Python 3.11 is required" >&2
  exit 1
fi
stamp=.venv/.installed
digest=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$digest" ]; then
  echo "creating .venv with $PYTHON"
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[dev]'
  echo "$digest" > "$stamp"
fi
echo "dependencies ready"
