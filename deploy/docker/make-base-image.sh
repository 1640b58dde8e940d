#!/usr/bin/env bash
# Builds `localhost/kron-base`: Debian bookworm (minbase) with its python3 (3.11), CA certificates
# and tzdata, made with debootstrap and `podman import`.
#
# Why: machines without a reachable container registry cannot pull `python:3.11-slim`. Real
# clusters keep the Dockerfile default (BASE_IMAGE=python:3.11-slim); here we build
# `--build-arg BASE_IMAGE=localhost/kron-base` instead.
#
# Idempotent: does nothing when the image exists (KRON_BASE_REBUILD=1 forces a rebuild).
# Needs root (debootstrap), podman and debootstrap:
#   apt-get install -y podman buildah podman-docker runc debootstrap
#
# Env: KRON_BASE_IMAGE (default localhost/kron-base:latest), KRON_DEBIAN_MIRROR (default: the first Debian
# mirror in /etc/apt/sources.list*), KRON_DEBIAN_SUITE (default bookworm).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
# Our podman settings unless the caller chose others (see podman/containers.conf).
export CONTAINERS_CONF="${CONTAINERS_CONF:-$here/podman/containers.conf}"
export CONTAINERS_STORAGE_CONF="${CONTAINERS_STORAGE_CONF:-$here/podman/storage.conf}"

image="${KRON_BASE_IMAGE:-localhost/kron-base:latest}"
suite="${KRON_DEBIAN_SUITE:-bookworm}"

log() { echo "make-base-image: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

if [[ "${KRON_BASE_REBUILD:-0}" != 1 ]] && podman image exists "$image"; then
  log "$image exists (KRON_BASE_REBUILD=1 rebuilds it)"
  exit 0
fi

[[ $EUID -eq 0 ]] || die "debootstrap needs root"
command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install -y debootstrap)"

# The machine's own Debian mirror: the only one these machines may reach. Handles one-line
# (`deb URL suite ...`) and deb822 (`URIs: URL`) sources; skips security and disabled entries.
find_mirror() {
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [[ -f "$f" ]] || continue
    awk '
      /^[[:space:]]*#/ { next }
      $1 == "deb" {
        for (i = 2; i <= NF; i++) if ($i !~ /^\[/) { print $i; break }
        next
      }
      tolower($1) == "uris:" { print $2 }
    ' "$f"
  done | grep -v -e security -e '^$' | grep -i debian | head -n 1
}

mirror="${KRON_DEBIAN_MIRROR:-$(find_mirror)}"
[[ -n "$mirror" ]] || die "no Debian mirror found in /etc/apt/sources.list*; set KRON_DEBIAN_MIRROR"
log "building $image from $suite at $mirror"

work="$(mktemp -d /var/tmp/kron-base.XXXXXX)"
trap 'rm -rf "$work"' EXIT
rootfs="$work/rootfs"

# minbase + the interpreter the PEX runs on; ca-certificates for HTTPS to Anthropic/Composio/webhooks;
# tzdata for zoneinfo (schedules name time zones).
debootstrap --variant=minbase --include=python3-minimal,python3,ca-certificates,tzdata \
  "$suite" "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
  || { tail -n 30 "$work/debootstrap.log" >&2; die "debootstrap failed"; }

# What a runtime image does not need: package caches and lists, docs, man pages.
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
  "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/*
"$rootfs/usr/bin/python3" --version >/dev/null 2>&1 || chroot "$rootfs" python3 --version >/dev/null \
  || die "python3 missing from the rootfs"

tar --numeric-owner -C "$rootfs" -c . | podman import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  --quiet - "$image" >/dev/null
log "built $image ($(podman image inspect --format '{{.Size}}' "$image") bytes)"
