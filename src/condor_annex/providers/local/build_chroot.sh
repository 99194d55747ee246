#!/usr/bin/env bash
# Build (once) and mount the trixie chroot that holds Debian's HTCondor 23.9 packages.
#
# Debian bookworm ships no HTCondor; trixie's packages need a newer libc, so they live in a
# debootstrapped trixie root.  The finished root is cached as a zstd tarball under
# $CONDOR_ANNEX_CACHE (default /var/cache/condor-annex) and unpacked to $CONDOR_ANNEX_ROOT
# (default /var/lib/condor-annex/root).  Re-runs with a ready root take well under a second.
#
# Usage: build_chroot.sh [--mount-only]
# Prints the root path on its last line.  Needs root (debootstrap, mount).
set -euo pipefail

RECIPE=7   # bump when the package list or layout below changes (5: cloud-init, 6: htcondor,
           # 7: sudo)
CACHE=${CONDOR_ANNEX_CACHE:-/var/cache/condor-annex}
ROOT=${CONDOR_ANNEX_ROOT:-/var/lib/condor-annex/root}
TARBALL=$CACHE/trixie-condor-r$RECIPE.tar.zst
# cloud-init: instances boot as EC2's stock Debian images do (cloud-init's stages run by the
# local cloud's stand-in init; see docs/local-cloud.md).  htcondor (the name the bootstrap
# installs; trixie's metapackage over condor): instances cannot reach a mirror, so the
# bootstrap's install step must find every package it installs already there (a no-op).
# sudo: Debian's EC2 images carry it; the seed's admin user runs condor_token_create through it
# (cloud-init's users: ... sudo: rules).  No python3-venv: the seed's
# `python3 -m venv --system-site-packages --without-pip` works without it.
PACKAGES="condor htcondor python3-boto3 iptables procps cloud-init sudo"

log() { echo "build-chroot: $*" >&2; }

host_mirror() {
    # The Debian mirror this host already uses (deb822 or one-line sources), so no host
    # name is written into the project.
    local m
    m=$(grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' \
        | grep -v security | head -n1 || true)
    [ -n "$m" ] || m=$(grep -hE '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' | head -n1 || true)
    [ -n "$m" ] || { log "no Debian mirror found in /etc/apt sources"; exit 1; }
    echo "$m"
}

mount_root() {
    mountpoint -q "$ROOT" || mount --bind "$ROOT" "$ROOT"
    mountpoint -q "$ROOT/proc" || mount -t proc proc "$ROOT/proc"
    mountpoint -q "$ROOT/sys" || mount --rbind /sys "$ROOT/sys"
    mountpoint -q "$ROOT/dev" || mount --bind /dev "$ROOT/dev"
    mountpoint -q "$ROOT/dev/pts" || mount --bind /dev/pts "$ROOT/dev/pts"
    mkdir -p "$ROOT/run/lock/condor" "$ROOT/var/lock/condor"
    chroot "$ROOT" chown condor:condor /run/lock/condor /var/lock/condor 2>/dev/null || true
}

umount_root() {
    for m in dev/pts dev sys proc; do
        mountpoint -q "$ROOT/$m" && umount -l "$ROOT/$m" || true
    done
    mountpoint -q "$ROOT" && umount -l "$ROOT" || true
}

ensure_host_tools() {
    local need=()
    command -v debootstrap >/dev/null || need+=(debootstrap)
    command -v zstd >/dev/null || need+=(zstd)
    command -v ip >/dev/null || need+=(iproute2)
    if ((${#need[@]})); then
        log "installing host packages: ${need[*]}"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    fi
}

if [ "${1:-}" = "--umount" ]; then umount_root; exit 0; fi

if [ -f "$ROOT/.condor-annex-recipe" ] && [ "$(cat "$ROOT/.condor-annex-recipe")" = "$RECIPE" ]; then
    mount_root
    echo "$ROOT"; exit 0
fi
[ "${1:-}" = "--mount-only" ] && { log "no ready root at $ROOT"; exit 1; }

ensure_host_tools
umount_root
rm -rf "$ROOT"
mkdir -p "$ROOT" "$CACHE"
start=$(date +%s)
if [ -f "$TARBALL" ]; then
    log "restoring cached root from $TARBALL"
    zstd -dc "$TARBALL" | tar -C "$ROOT" -xf -
else
    mirror=$(host_mirror)
    log "debootstrap trixie (minbase) into $ROOT"
    debootstrap --variant=minbase trixie "$ROOT" "$mirror" >"$CACHE/debootstrap.log" 2>&1 \
        || { tail -n 20 "$CACHE/debootstrap.log" >&2; exit 1; }
    mount_root
    cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
    printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"; chmod 755 "$ROOT/usr/sbin/policy-rc.d"
    log "installing $PACKAGES"
    chroot "$ROOT" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive chroot "$ROOT" apt-get install -y -qq --no-install-recommends $PACKAGES \
        >"$CACHE/apt.log" 2>&1 || { tail -n 20 "$CACHE/apt.log" >&2; exit 1; }
    chroot "$ROOT" apt-get clean
    # An ordinary user who submits jobs (HTCondor refuses root submitters).
    chroot "$ROOT" id annexuser >/dev/null 2>&1 || chroot "$ROOT" useradd -m -u 2001 -s /bin/sh annexuser
    umount_root
    log "caching root as $TARBALL"
    mkdir -p "$CACHE/.snap"; mount --bind "$ROOT" "$CACHE/.snap"
    tar -C "$CACHE/.snap" -cf - . | zstd -q -3 -T0 -o "$TARBALL.tmp"
    umount "$CACHE/.snap"; rmdir "$CACHE/.snap"
    mv "$TARBALL.tmp" "$TARBALL"
    find "$CACHE" -maxdepth 1 -name 'trixie-condor-r*.tar.zst' ! -name "$(basename "$TARBALL")" -delete
fi
echo "$RECIPE" >"$ROOT/.condor-annex-recipe"
mount_root
log "root ready in $(( $(date +%s) - start )) s"
echo "$ROOT"
