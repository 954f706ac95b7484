#!/usr/bin/env bash
# make piuparts: Debian's install, upgrade, remove and purge tester on bookworm and on trixie.
# For each release piuparts checks, in a fresh minimal chroot of that release: the .deb installs
# with apt and purges without leftovers; and the previous release (built here from the commit
# named in tests/upgrade/previous-release, served from a local repository) upgrades to this .deb
# with real data in /var/lib/edged: its own edged imports people and stores pushes, the new one
# starts on them (migrations run) and finds every acknowledged record exactly once, the people
# and the newest schema (tests/upgrade/scripts/post_install_edged_data).
#
# Needs root, piuparts, dpkg-dev and the package's build dependencies. Base chroots are cached in
# $EDGED_CI_CACHE (default /var/cache/edged-ci). PIUPARTS_RELEASES picks the releases.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=${EDGED_CI_CACHE:-/var/cache/edged-ci}
RELEASES=${PIUPARTS_RELEASES:-bookworm trixie}
SYSPATH=/usr/sbin:/usr/bin:/sbin:/bin
started=$SECONDS

say() { printf '\n===== piuparts: %s (%d s)\n' "$*" $((SECONDS - started)); }
fail() { printf 'piuparts: FAIL: %s\n' "$*"; exit 1; }

DEB=$(ls -t "$REPO"/dist/edged_*_all.deb 2>/dev/null | head -n 1 || true)
[ -n "$DEB" ] || fail "no dist/edged_*_all.deb: run make deb first"
read -r PREV_VERSION PREV_COMMIT < <(grep -v '^#' "$REPO/tests/upgrade/previous-release")

# ----- the previous release's .deb, in a local repository ------------------------------------
PREV=$CACHE/previous/$PREV_VERSION
if [ ! -e "$PREV/edged_${PREV_VERSION}_all.deb" ]; then
    say "build edged $PREV_VERSION from $PREV_COMMIT"
    git -C "$REPO" cat-file -e "$PREV_COMMIT^{commit}" \
        || fail "commit $PREV_COMMIT is not in this clone (a shallow clone? fetch the history)"
    rm -rf "$PREV" && mkdir -p "$PREV/src/edged"
    git -C "$REPO" archive "$PREV_COMMIT" | tar -x -C "$PREV/src/edged"
    (cd "$PREV/src/edged" && env -i PATH=$SYSPATH HOME=/root LC_ALL=C.UTF-8 \
        dpkg-buildpackage -us -uc -b >"$PREV/build.log" 2>&1) \
        || { tail -n 30 "$PREV/build.log"; fail "building $PREV_VERSION"; }
    mv "$PREV/src/edged_${PREV_VERSION}_all.deb" "$PREV/"
    rm -rf "$PREV/src"
fi
(cd "$PREV" && dpkg-scanpackages --multiversion . >Packages 2>/dev/null)

MIRROR=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' \
    | awk '$2 == "bookworm" || $2 == "trixie" { print $1; exit }')
MIRROR=${MIRROR:-http://deb.debian.org/debian/}
mkdir -p "$CACHE/piuparts"

for release in $RELEASES; do
    tgz=$CACHE/piuparts/$release.tgz
    if [ -s "$tgz" ]; then base=(-b "$tgz"); else base=(-s "$tgz"); fi
    # debconf on trixie leaves this directory behind in any chroot (newer piuparts ignore it).
    ignore=(--ignore=/var/cache/debconf/tmp.ci/)
    say "$release: install, purge, upgrade from $PREV_VERSION with data ($(basename "$DEB"))"
    log=$CACHE/piuparts/$release.log
    if ! piuparts -d "$release" -m "$MIRROR main" "${base[@]}" "${ignore[@]}" \
        --bindmount="$PREV" --extra-repo="deb [trusted=yes] file://$PREV ./" \
        --scriptsdir="$REPO/tests/upgrade/scripts" "$DEB" >"$log" 2>&1; then
        grep -E ' (INFO|ERROR|FAIL)|edged upgrade data' "$log" | tail -n 40
        fail "$release (whole log: $log)"
    fi
    grep -E 'PASS|edged upgrade data' "$log" | awk '!seen[$0]++' | sed 's/^/  /'
done
say "passed"
