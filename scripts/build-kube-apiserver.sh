#!/usr/bin/env bash
# Builds kube-apiserver v1.20.2 from Debian bookworm's `kubernetes` source package (no registry
# ships the binary here) and caches it outside the checkout. Prints the directory holding
# `kube-apiserver` and `etcd` on its last line of stdout.
#
# KUBEBUILDER_ASSETS=<dir with kube-apiserver and etcd>  use prebuilt binaries, build nothing.
# LITEBOXD_CACHE=<dir>                                     cache root (default ~/.cache/liteboxd).
set -euo pipefail

log() { printf '[build-kube-apiserver] %s\n' "$*" >&2; }

if [[ -n "${KUBEBUILDER_ASSETS:-}" ]]; then
  for bin in kube-apiserver etcd; do
    [[ -x "$KUBEBUILDER_ASSETS/$bin" ]] || { log "KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS has no executable $bin"; exit 1; }
  done
  log "using prebuilt binaries from KUBEBUILDER_ASSETS"
  echo "$KUBEBUILDER_ASSETS"
  exit 0
fi

cache="${LITEBOXD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/liteboxd}"
version="1.20.5+really1.20.2"
assets="$cache/kube-assets/v1.20.2-r2"
if [[ -x "$assets/kube-apiserver" && -x "$assets/etcd" ]]; then
  log "cached: $assets"
  echo "$assets"
  exit 0
fi

export DEBIAN_FRONTEND=noninteractive
if ! grep -rqs '^Types:.*deb-src' /etc/apt/sources.list.d/ && ! grep -qs '^deb-src' /etc/apt/sources.list; then
  mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  log "adding a deb-src entry for bookworm main on ${mirror:=http://deb.debian.org/debian}"
  printf 'Types: deb-src\nURIs: %s\nSuites: bookworm\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    "$mirror" > /etc/apt/sources.list.d/liteboxd-deb-src.sources
  apt-get update -qq
fi
missing=()
for pkg in golang-go make rsync jq etcd-server dpkg-dev; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if ((${#missing[@]})); then
  log "installing build tools: ${missing[*]}"
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

work="$cache/kube-src"
tree="$work/gopath/src/k8s.io/kubernetes"
if [[ ! -d "$work/kubernetes-$version" ]]; then
  log "fetching Debian source package kubernetes $version (34 MB)"
  mkdir -p "$work"
  # The pinned version first; a mirror that has moved on serves the current bookworm source.
  if ! (cd "$work" && apt-get source -qq "kubernetes=$version" >/dev/null 2>&1); then
    (cd "$work" && apt-get source -qq kubernetes >/dev/null)
  fi
fi
mkdir -p "$(dirname "$tree")"
ln -sfn "$work/kubernetes-$version" "$tree"

# reflect2 v1.0.1 (vendored) crashes on Go >= 1.18 the first time a custom resource is decoded:
# reflect.mapiterinit now fills a caller-allocated iterator. Apply what reflect2 v1.0.2 did.
reflect2="$tree/vendor/github.com/modern-go/reflect2"
if ! grep -q 'liteboxd: reflect2 v1.0.2 iterator' "$reflect2/unsafe_link.go"; then
  log "patching vendored reflect2 for Go >= 1.18 (as reflect2 v1.0.2)"
  python3 - "$reflect2" <<'PY'
import pathlib, re, sys
root = pathlib.Path(sys.argv[1])
link = root / "unsafe_link.go"
text = link.read_text()
text = text.replace(
    "func mapiterinit(rtype unsafe.Pointer, m unsafe.Pointer) *hiter",
    "func mapiterinit(rtype unsafe.Pointer, m unsafe.Pointer, it *hiter)")
text = re.sub(
    r"type hiter struct \{.*?\n\}",
    """// liteboxd: reflect2 v1.0.2 iterator layout (the runtime fills all of it).
type hiter struct {
\tkey         unsafe.Pointer
\tvalue       unsafe.Pointer
\tt           unsafe.Pointer
\th           unsafe.Pointer
\tbuckets     unsafe.Pointer
\tbptr        unsafe.Pointer
\toverflow    *[]unsafe.Pointer
\toldoverflow *[]unsafe.Pointer
\tstartBucket uintptr
\toffset      uint8
\twrapped     bool
\tB           uint8
\ti           uint8
\tbucket      uintptr
\tcheckBucket uintptr
}""", text, flags=re.S)
link.write_text(text)
umap = root / "unsafe_map.go"
text = umap.read_text()
old = """	return &UnsafeMapIterator{
		hiter:      mapiterinit(type2.rtype, *(*unsafe.Pointer)(obj)),"""
new = """	var it hiter
	mapiterinit(type2.rtype, *(*unsafe.Pointer)(obj), &it)
	return &UnsafeMapIterator{
		hiter:      &it,"""
assert old in text, "unexpected reflect2 unsafe_map.go"
umap.write_text(text.replace(old, new))
PY
fi

export GOPATH="$work/gopath" GO111MODULE=off GOFLAGS='' CGO_ENABLED=0 GOCACHE="$cache/go-build"
cd "$tree"
if [[ ! -s pkg/generated/openapi/zz_generated.openapi.go ]]; then
  log "generating OpenAPI definitions (make gen_openapi, about a minute)"
  make gen_openapi >"$work/gen_openapi.log" 2>&1 || { tail -30 "$work/gen_openapi.log" >&2; exit 1; }
fi
log "compiling kube-apiserver (4-7 minutes cold on 2 cores, seconds when cached)"
start=$(date +%s)
( while sleep 30; do log "still compiling... $(( $(date +%s) - start ))s"; done ) &
ticker=$!
trap 'kill $ticker 2>/dev/null || true' EXIT
mkdir -p "$assets.tmp"
# Stamp the version as Kubernetes' own build does (hack/lib/version.sh): both version packages,
# so `--version` and the /version endpoint agree.
ldflags="-s -w"
for pkg in k8s.io/kubernetes/vendor/k8s.io/component-base/version k8s.io/kubernetes/vendor/k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=v1.20.2 -X $pkg.gitMajor=1 -X $pkg.gitMinor=20 -X $pkg.gitTreeState=clean"
done
go build -trimpath -ldflags "$ldflags" -o "$assets.tmp/kube-apiserver" ./cmd/kube-apiserver
kill $ticker 2>/dev/null || true
ln -sf "$(command -v etcd)" "$assets.tmp/etcd"
rm -rf "$assets" && mv "$assets.tmp" "$assets"
log "built in $(( $(date +%s) - start ))s: $("$assets/kube-apiserver" --version)"
echo "$assets"
