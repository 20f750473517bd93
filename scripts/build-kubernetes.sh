#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager, kube-scheduler and kubectl v1.20.2 from Debian's
# `kubernetes` source package with Debian's Go, and caches them under ~/.cache/davit/kubernetes-1.20.2/bin.
# Idempotent: a complete cache is reused as it is.
#
# Why the reflect2 swap: Kubernetes 1.20 vendors modern-go/reflect2 1.0.1, whose unsafe map iteration
# breaks with Go >= 1.18 (Debian ships 1.19): the API server dies with SIGSEGV as soon as it encodes a
# custom resource. Debian's golang-github-modern-go-reflect2-dev ships 1.0.2, which fixes it.
set -euo pipefail

CACHE_DIR="${DAVIT_CACHE:-$HOME/.cache/davit}"
KUBE_VERSION=1.20.2
OUT="$CACHE_DIR/kubernetes-$KUBE_VERSION/bin"
BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubectl)

complete() {
  for b in "${BINARIES[@]}"; do [ -x "$OUT/$b" ] || return 1; done
}
if complete; then
  echo "kubernetes $KUBE_VERSION binaries cached in $OUT"
  exit 0
fi

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

# A deb-src entry for the same archive the machine already uses, so `apt-get source` works.
if ! grep -rqs "deb-src" /etc/apt/sources.list /etc/apt/sources.list.d/; then
  echo "adding a deb-src entry for Debian's main archive"
  $SUDO tee /etc/apt/sources.list.d/davit-deb-src.sources >/dev/null <<SRC
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends \
  golang-go rsync dpkg-dev golang-github-modern-go-reflect2-dev etcd-server

WORK="$CACHE_DIR/src"
rm -rf "$WORK"
mkdir -p "$WORK"
cd "$WORK"
apt-get source -q kubernetes
SRC_DIR=$(find "$WORK" -maxdepth 1 -mindepth 1 -type d -name 'kubernetes-*' | head -n 1)
[ -n "$SRC_DIR" ] || { echo "apt-get source kubernetes produced no source tree" >&2; exit 1; }
cd "$SRC_DIR"

REFLECT2_SRC=/usr/share/gocode/src/github.com/modern-go/reflect2
[ -d "$REFLECT2_SRC" ] || { echo "missing $REFLECT2_SRC" >&2; exit 1; }
rm -rf vendor/github.com/modern-go/reflect2
mkdir -p vendor/github.com/modern-go/reflect2
cp -a "$REFLECT2_SRC"/. vendor/github.com/modern-go/reflect2/
# The vendored module list must agree with the swapped-in version or `go build -mod=vendor` refuses it.
sed -i 's#^\# github.com/modern-go/reflect2 v1.0.1#\# github.com/modern-go/reflect2 v1.0.2#' vendor/modules.txt
sed -i 's#github.com/modern-go/reflect2 v1.0.1#github.com/modern-go/reflect2 v1.0.2#' go.mod

WHAT=""
for b in "${BINARIES[@]}"; do WHAT="$WHAT cmd/$b"; done
make WHAT="${WHAT# }"

mkdir -p "$OUT"
for b in "${BINARIES[@]}"; do
  install -m 0755 "_output/bin/$b" "$OUT/$b"
done
rm -rf "$WORK"
echo "kubernetes $KUBE_VERSION binaries cached in $OUT"
