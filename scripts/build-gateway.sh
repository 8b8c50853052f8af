#!/usr/bin/env bash
# Builds the gateway once, on the controller or in CI, for the hosts that run it:
#
#   scripts/build-gateway.sh          the wheelhouse: the gateway's wheel with its hot modules
#                                     compiled by Cython, the pure-Python wheel beside it (pip takes
#                                     it where the compiled one does not fit), and its pinned runtime
#                                     dependencies as wheels for the hosts' Python, with
#                                     requirements.txt naming every wheel with its sha256.
#   scripts/build-gateway.sh image    also the OCI image for in-cluster mode, from that wheelhouse,
#                                     on a Debian 12 base made here with mmdebstrap (no registry),
#                                     and its archive for K3s's image import.
#
# The hosts are Debian 12: CPython 3.11 on glibc 2.36 (LITEBOXD_GATEWAY_HOST_PYTHON,
# LITEBOXD_GATEWAY_HOST_GLIBC; the machine's architecture). The compiled wheel is built by this
# environment's Python, so only when that is CPython of the hosts' version on a glibc no newer than
# theirs; otherwise, without a C compiler, or with LITEBOXD_GATEWAY_NO_EXTENSIONS=1, the wheelhouse
# holds the pure-Python wheel only, and says so. Everything is cached by content hash under
# $LITEBOXD_CACHE/gateway; gateway/dist/wheelhouse (LITEBOXD_GATEWAY_DIST/wheelhouse) links to the
# checkout's current wheelhouse, where the role looks by default. stdout is what was built, as
# NAME=VALUE lines; progress goes to stderr.
# shellcheck source=scripts/env.sh
source "$(dirname "$0")/env.sh"
cd "$LITEBOXD_ROOT" || exit 1
log() { printf '[build-gateway] %s\n' "$*" >&2; }

host_python=${LITEBOXD_GATEWAY_HOST_PYTHON:-3.11}
host_glibc=${LITEBOXD_GATEWAY_HOST_GLIBC:-2.36}
arch=$(uname -m)
cache="$LITEBOXD_CACHE/gateway"
dist=${LITEBOXD_GATEWAY_DIST:-gateway/dist}
mkdir -p "$cache" "$dist"
script_hash=$(sha256sum "$0" | cut -c1-16)

# What pip may install on the hosts: CPython $host_python wheels for manylinux up to their glibc,
# and the plain linux tag of a wheel built here.
host_tags=(--only-binary=:all: --implementation cp --python-version "$host_python" --abi "cp${host_python/./}")
for minor in $(seq 5 "${host_glibc#*.}"); do host_tags+=(--platform "manylinux_2_${minor}_$arch"); done
host_tags+=(--platform "manylinux2014_$arch" --platform "linux_$arch")

# -- the wheelhouse ---------------------------------------------------------------------------
project_files() {
  find gateway -type f ! -path 'gateway/build/*' ! -path 'gateway/dist/*' ! -path '*/__pycache__/*' \
    ! -path '*.egg-info/*' ! -name Containerfile | LC_ALL=C sort
}
builder=$(python -c 'import platform, sys; print(platform.python_implementation(), "%d.%d" % sys.version_info[:2])')
builder_glibc=$(getconf GNU_LIBC_VERSION | awk '{print $2}')
wheelhouse_key=$({ project_files | xargs sha256sum; echo "$host_python $host_glibc $arch $builder $builder_glibc";
                   echo "${LITEBOXD_GATEWAY_NO_EXTENSIONS:-} ${CC:-} $script_hash"; } | sha256sum | cut -c1-16)
wheelhouse="$cache/wheelhouse-$wheelhouse_key"

# build_wheel DEST [ENV=VALUE...]: the gateway's wheel from a clean copy of the project (an
# in-tree build/ of an earlier build must not leak into this one).
build_wheel() {
  local dest=$1 copy
  shift
  copy=$(mktemp -d)
  rsync -a --exclude build --exclude dist --exclude '*.egg-info' --exclude __pycache__ gateway/ "$copy/"
  # Fixed zip timestamps: the pure-Python wheel is the same bytes wherever it is built. No debug
  # information in the compiled modules (a third of their size; perf still has their symbols).
  env SOURCE_DATE_EPOCH=315532800 CFLAGS=-g0 "$@" python -m pip wheel -q --no-deps --no-build-isolation \
    --disable-pip-version-check -w "$dest" "$copy" >&2
  rm -rf "$copy"
}

make_wheelhouse() {
  local work=$1 compiled pure
  mkdir -p "$work/compiled" "$work/pure"
  if [[ -n "${LITEBOXD_GATEWAY_NO_EXTENSIONS:-}" ]]; then
    log "LITEBOXD_GATEWAY_NO_EXTENSIONS is set: the pure-Python wheel only"
  elif [[ $builder != "CPython $host_python" ]]; then
    log "this Python is $builder, the hosts' CPython $host_python: no compiled wheel, the hosts run plain Python"
  elif [[ "$(printf '%s\n' "$builder_glibc" "$host_glibc" | sort -V | tail -n1)" != "$host_glibc" ]]; then
    log "glibc here is $builder_glibc, newer than the hosts' $host_glibc: no compiled wheel, the hosts run plain Python"
  else
    log "building the wheel with the compiled modules (Cython, CPython $host_python)"
    build_wheel "$work/compiled"
    compiled=$(find "$work/compiled" -name '*.whl')
    modules=$(python -m zipfile -l "$compiled" | awk '$1 ~ /\.so$/ {sub(/.*\//, "", $1); sub(/\..*/, "", $1); print $1}' | sort | xargs)
    if [[ -z $modules ]]; then
      log "no module compiled (no C compiler?): the hosts run plain Python"
      rm -f "$compiled"
    else
      log "compiled: $modules"
      mv "$compiled" "$work/"
    fi
  fi
  log "building the pure-Python wheel"
  build_wheel "$work/pure" LITEBOXD_GATEWAY_NO_EXTENSIONS=1
  pure=$(find "$work/pure" -name '*.whl')
  mv "$pure" "$work/"
  rmdir "$work/compiled" "$work/pure"
  log "downloading the pinned dependencies for CPython $host_python, glibc $host_glibc, $arch"
  python -m pip download -q --disable-pip-version-check --dest "$work" -c gateway/constraints.txt \
    "${host_tags[@]}" "$work/$(basename "$pure")" >&2
  python - "$work" <<'PY'
import collections, hashlib, pathlib, sys
work = pathlib.Path(sys.argv[1])
pins = collections.defaultdict(list)
for wheel in sorted(work.glob("*.whl")):
    name, version = wheel.name.split("-")[:2]
    pins[name].append((version, hashlib.sha256(wheel.read_bytes()).hexdigest()))
lines = ["# Every wheel of this wheelhouse, for pip install --no-index --require-hashes (scripts/build-gateway.sh)."]
for name, found in sorted(pins.items()):
    versions = {version for version, _digest in found}
    if len(versions) != 1:
        sys.exit(f"two versions of {name} in the wheelhouse: {sorted(versions)}")
    lines.append(f"{name}=={versions.pop()} " + " ".join(f"--hash=sha256:{digest}" for _version, digest in found))
(work / "requirements.txt").write_text("\n".join(lines) + "\n")
PY
  # What the hosts will do, offline: resolve every requirement from the wheelhouse alone.
  python -m pip install -q --disable-pip-version-check --dry-run --ignore-installed --no-index \
    --find-links "$work" --require-hashes -r "$work/requirements.txt" "${host_tags[@]}" --target "$work/.check" >&2
  rm -rf "$work/.check"
}

if [[ ! -e "$wheelhouse/requirements.txt" ]]; then
  exec {lock}>"$cache/build.lock"
  flock "$lock"
  if [[ ! -e "$wheelhouse/requirements.txt" ]]; then
    work="$wheelhouse.tmp.$$"
    rm -rf "$work"
    make_wheelhouse "$work"
    mv "$work" "$wheelhouse"
    # Wheelhouses of other sources nobody built for a week.
    find "$cache" -maxdepth 1 -name 'wheelhouse-*' -mtime +7 -exec rm -rf {} +
  fi
  flock -u "$lock"
fi
touch "$wheelhouse"
# A link of its own, renamed over the old one: concurrent builds each leave a whole link.
ln -sfn "$wheelhouse" "$dist/.wheelhouse.$$" && mv -T "$dist/.wheelhouse.$$" "$dist/wheelhouse"
wheels=("$wheelhouse"/*.whl)
log "wheelhouse $wheelhouse ($(du -sh "$wheelhouse" | cut -f1)): ${#wheels[@]} wheels"
echo "wheelhouse=$wheelhouse"
[[ "${1:-}" == image ]] || exit 0

# -- the OCI image ----------------------------------------------------------------------------
# The base: Debian 12's python3.11 and the libraries it loads, extracted by mmdebstrap without a
# shell, apt or dpkg's database (the extract variant installs nothing else), stdlib byte-compiled
# (the root filesystem is read-only at run time), and a passwd entry for uid 65532.
base_packages=python3-minimal,libpython3.11-stdlib,python3.11-venv
# The extract variant runs only extract hooks. glibc's gconv modules serve iconv, which Python does
# not use. "$1" is the root being built, expanded by mmdebstrap.
# shellcheck disable=SC2016
base_hooks=(
  --extract-hook='rm -rf "$1"/usr/share/doc "$1"/usr/share/man "$1"/usr/share/locale "$1"/usr/share/info "$1"/usr/lib/*-linux-gnu/gconv'
  --extract-hook='chroot "$1" /usr/bin/python3.11 -m compileall -q /usr/lib/python3.11 >/dev/null'
  --extract-hook='printf "root:x:0:0:root:/root:/usr/sbin/nologin\ngateway:x:65532:65532:liteboxd-gateway:/nonexistent:/usr/sbin/nologin\n" >"$1/etc/passwd"'
  --extract-hook='printf "root:x:0:\ngateway:x:65532:\n" >"$1/etc/group"'
)
base_key=$(printf '%s\n' "$base_packages" "${base_hooks[@]}" | sha256sum | cut -c1-12)
base="localhost/liteboxd-gateway-base:bookworm-$base_key"
base_archive="$cache/base-$base_key.tar"
pure=("$wheelhouse"/liteboxd_gateway-*-py3-none-any.whl)
version=$(basename "${pure[0]}" | cut -d- -f2)
image_key=$({ sha256sum "$wheelhouse/requirements.txt" gateway/Containerfile | cut -c1-64; echo "$base_key"; } \
            | sha256sum | cut -c1-12)
image="localhost/liteboxd-gateway:$version-$image_key"
image_archive="$cache/image-$version-$image_key.tar"

build_base() {
  local mirror work old
  mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  work=$(mktemp -d)
  log "building the image's base with mmdebstrap from ${mirror:-http://deb.debian.org/debian} (about 30 s)"
  mmdebstrap --variant=extract --include="$base_packages" "${base_hooks[@]}" \
    bookworm "$work/rootfs.tar" "${mirror:-http://deb.debian.org/debian}" 2>&1 \
    | while read -r line; do case "$line" in E:*) log "$line";; esac; done
  podman import -q --change "LABEL io.liteboxd.gateway.base=$base_key" "$work/rootfs.tar" "$base" >/dev/null
  rm -rf "$work"
  rm -f "$cache"/base-*.tar
  for old in $(podman images --format '{{.Tag}}' localhost/liteboxd-gateway-base); do
    [[ $old == "bookworm-$base_key" ]] || podman rmi "localhost/liteboxd-gateway-base:$old" >/dev/null 2>&1 || true
  done
  podman save -q -o "$base_archive.tmp" "$base" && mv "$base_archive.tmp" "$base_archive"
}

build_image() {
  local context old
  context=$(mktemp -d)
  cp -r "$wheelhouse" "$context/wheelhouse"
  log "building $image (offline: --network none, from $base)"
  podman build -q --layers=false --network none --pull-never --build-arg "BASE=$base" -f gateway/Containerfile \
    -t "$image" "$context" >/dev/null
  rm -rf "$context"
  # docker-archive: what `k3s ctr images import` and K3s's image directory both read.
  podman save -q --format docker-archive -o "$image_archive.tmp" "$image" && mv "$image_archive.tmp" "$image_archive"
  # Images of other sources nobody built for a week, from the cache and from Podman's store.
  find "$cache" -maxdepth 1 -name 'image-*.tar' -mtime +7 -delete
  for old in $(podman images --format '{{.Tag}}' localhost/liteboxd-gateway); do
    [[ -e "$cache/image-$old.tar" ]] || podman rmi -f "localhost/liteboxd-gateway:$old" >/dev/null
  done
}

# in_store REF ARCHIVE BUILD: REF in Podman's store, as it is, loaded from ARCHIVE, or built by BUILD.
in_store() {
  if podman image exists "$1"; then
    return 0
  elif [[ -s "$2" ]]; then
    podman load -q -i "$2" >/dev/null
  else
    "$3"
  fi
}
in_store "$base" "$base_archive" build_base
in_store "$image" "$image_archive" build_image
touch "$image_archive"
size=$(podman image inspect --format '{{.Size}}' "$image")
log "image $image: $((size / 1024 / 1024)) MiB ($size bytes); archive $image_archive ($(du -m "$image_archive" | cut -f1) MiB)"
echo "image=$image"
echo "image_archive=$image_archive"
echo "image_size=$size"
