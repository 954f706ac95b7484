#!/usr/bin/env bash
# make test-trixie: the third dependency world. The .deb, built as for bookworm, is installed with
# apt in a Debian 13 "trixie" root (debootstrap, chroot): trixie's Python 3.13 and trixie's own
# python3-* packages (starlette 0.46, hypercorn 0.17, httpx 0.28, anyio 4, sqlite-utils 3.38,
# SQLite 3.46). The whole test suite then runs there against the installed package, as CI does
# for bookworm on the host.
#
# Needs root, debootstrap and a built dist/edged_*_all.deb (make deb). The base root is cached in
# $EDGED_CI_CACHE (default /var/cache/edged-ci); each run starts from a fresh copy of it.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=${EDGED_CI_CACHE:-/var/cache/edged-ci}
BASE=$CACHE/trixie-base
ROOT=$CACHE/trixie-root
# What the tests need beside the package's own dependencies (apt resolves them, which
# debootstrap's --include cannot do for virtual packages such as python3-cffi-backend-api-*).
TEST_PACKAGES="python3-pytest python3-hypothesis python3-trustme python3-zeroconf
    python3-cryptography iproute2 ca-certificates man-db systemd mosquitto"
started=$SECONDS

say() { printf '\n===== test-trixie: %s (%d s)\n' "$*" $((SECONDS - started)); }
fail() { printf 'test-trixie: FAIL: %s\n' "$*"; exit 1; }

DEB=$(ls -t "$REPO"/dist/edged_*_all.deb 2>/dev/null | head -n 1 || true)
[ -n "$DEB" ] || fail "no dist/edged_*_all.deb: run make deb first"
mkdir -p "$CACHE"

if [ ! -e "$BASE/.complete" ]; then
    # The mirror apt on this host uses (only package registries are reachable); it serves
    # trixie as it serves bookworm.
    MIRROR=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' \
        | awk '$2 == "bookworm" || $2 == "trixie" { print $1; exit }')
    MIRROR=${MIRROR:-http://deb.debian.org/debian/}
    say "debootstrap trixie from $MIRROR"
    rm -rf "$BASE"
    debootstrap --variant=minbase trixie "$BASE" "$MIRROR" >"$CACHE/trixie-debootstrap.log" 2>&1 \
        || { tail -n 30 "$CACHE/trixie-debootstrap.log"; fail debootstrap; }
    touch "$BASE/.complete"
fi

mounted=()
cleanup() {
    local m
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount -l "${mounted[i]}" 2>/dev/null || true; done
}
trap cleanup EXIT
mnt() { mount "$@" && mounted+=("${!#}"); }

say "fresh root from the cached base"
# Never delete through a mount left by an interrupted run (/dev is bound in there).
if grep -q " $ROOT[/ ]" /proc/self/mounts; then fail "$ROOT still has mounts: umount -R $ROOT"; fi
rm -rf "$ROOT" && cp -a "$BASE" "$ROOT"
# The root is a mount point of its own, so that `ip netns exec` (the discovery tests) can make
# its mounts private inside the chroot.
mnt --bind "$ROOT" "$ROOT"
mount --make-rprivate "$ROOT"
mnt -t proc proc "$ROOT/proc"
mnt -t sysfs sys "$ROOT/sys"
mnt --bind /dev "$ROOT/dev"
mnt -t devpts -o newinstance,ptmxmode=0666 devpts "$ROOT/dev/pts"
mnt -t tmpfs tmpfs "$ROOT/dev/shm"
mnt -t tmpfs tmpfs "$ROOT/run"
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"

in_root() { chroot "$ROOT" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C.UTF-8 \
    DEBIAN_FRONTEND=noninteractive "$@"; }

say "install $(basename "$DEB") with apt, every dependency from trixie"
cp "$DEB" "$ROOT/tmp/"
in_root apt-get update -qq
# shellcheck disable=SC2086
in_root apt-get install -y -qq --no-install-recommends "/tmp/$(basename "$DEB")" $TEST_PACKAGES \
    >"$CACHE/trixie-install.log" 2>&1 || { tail -n 30 "$CACHE/trixie-install.log"; fail install; }
in_root dpkg-query -W -f '${Package} ${Version}\n' edged python3 python3-starlette \
    python3-hypercorn python3-gpiozero sqlite-utils python3-tenacity python3-httpx python3-anyio \
    python3-h11 python3-zeroconf python3-paho-mqtt mosquitto libsqlite3-0 systemd 2>/dev/null | sed 's/^/  /' || true

say "the whole test suite against the installed package (trixie's python3)"
mkdir -p "$ROOT/src"
git -C "$REPO" ls-files -z --cached --others --exclude-standard \
    | (cd "$REPO" && xargs -0 cp --parents -t "$ROOT/src")
# --import-mode=append: the checkout comes last on sys.path, so `edged` is the installed
# /usr/lib/python3/dist-packages/edged.
in_root sh -c 'cd /tmp && python3 -c "import edged, sys; print(\"edged from\", edged.__file__, \
\"on Python\", sys.version.split()[0])" && python3 -m pytest -q -p no:cacheprovider \
--import-mode=append /src/tests'
say "passed"
