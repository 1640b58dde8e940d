#!/usr/bin/env bash
# Proves that kron's dependency rules are enforced by every Pants goal CI relies on.
#
# Copies the repo (tracked + untracked-but-not-ignored files) to a temp dir, plants gateway code
# that imports kron.worker (forbidden: only the worker itself, tests/ and bench/ may), and asserts
# that `lint`, `check`, `test` and `package` each FAIL, and fail because of the dependency rule
# (a "DependencyRuleActionDeniedError ... dependency violation" naming the planted code), not for
# any other reason. Exits 0 only then. Reuses the normal Pants caches; removes its temp dir.
#
# Usage: build-support/check-dep-rules.sh        (from anywhere inside the repo)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/kron-dep-rules.XXXXXX")"
trap 'rm -rf "${WORK}"' EXIT

log() { echo "check-dep-rules: $*"; }

# 1. Copy the working tree as git sees it (what a fresh clone plus local edits would have).
(
  cd "${REPO}"
  git ls-files -z --cached --others --exclude-standard \
    | while IFS= read -r -d '' f; do [[ -e "${f}" ]] && printf '%s\0' "${f}"; done \
    | tar --null -T - -cf -
) | tar -C "${WORK}" -xf -
# The pex CLI PEX is gitignored (./pants builds it); reuse ours instead of rebuilding it.
if [[ -d "${REPO}/build-support/bin" ]]; then
  cp -a "${REPO}/build-support/bin" "${WORK}/build-support/"
fi

# 2. Plant the violation: gateway code importing the worker, with a test and a pex_binary so that
#    `test` and `package` have something to build.
PLANT_DIR="src/python/kron/gateway/_planted"
mkdir -p "${WORK}/${PLANT_DIR}"
cat >"${WORK}/${PLANT_DIR}/violation.py" <<'EOF'
"""Planted by build-support/check-dep-rules.sh: the gateway must never import the worker."""

import kron.worker


def main() -> None:
    print(kron.worker.__name__)
EOF
cat >"${WORK}/${PLANT_DIR}/violation_test.py" <<'EOF'
from kron.gateway._planted.violation import main


def test_planted() -> None:
    main()
EOF
cat >"${WORK}/${PLANT_DIR}/BUILD" <<'EOF'
python_sources(name="planted")

python_tests(name="planted_tests")

pex_binary(name="planted-bin", entry_point="kron.gateway._planted.violation:main")
EOF

# 3. Each goal must fail with a dependency-rule violation that names the planted code.
failures=0
run_goal() {
  local goal="$1"
  shift
  local out="${WORK}/.out-${goal}"
  local rc=0
  log "pants ${goal} $* (expecting a dependency-rule failure)..."
  (cd "${WORK}" && ./pants --no-pantsd "${goal}" "$@") >"${out}" 2>&1 || rc=$?
  if [[ ${rc} -eq 0 ]]; then
    log "FAIL: 'pants ${goal}' succeeded despite gateway -> worker import"
    tail -n 30 "${out}" | sed 's/^/    /'
    failures=$((failures + 1))
  elif { [[ "${goal}" != lint ]] || grep -q "dep-rules failed" "${out}"; } \
    && grep -q "DependencyRuleActionDeniedError" "${out}" \
    && grep -q "dependency violation" "${out}" \
    && grep -q "${PLANT_DIR}" "${out}" \
    && grep -q "src/python/kron/worker" "${out}"; then
    log "ok: 'pants ${goal}' failed (exit ${rc}) with the dependency-rule violation:"
    grep -m 1 -A 3 "${PLANT_DIR}.* dependency violation" "${out}" | sed 's/^/    /' || true
  else
    log "FAIL: 'pants ${goal}' failed (exit ${rc}) but not with a dependency-rule violation:"
    tail -n 40 "${out}" | sed 's/^/    /'
    failures=$((failures + 1))
  fi
}

run_goal lint "${PLANT_DIR}::"
run_goal check "${PLANT_DIR}::"
run_goal test "${PLANT_DIR}::"
run_goal package "${PLANT_DIR}:planted-bin"

if [[ ${failures} -ne 0 ]]; then
  log "${failures} goal(s) did not enforce the dependency rules."
  exit 1
fi
log "all goals (lint, check, test, package) enforce the dependency rules."
