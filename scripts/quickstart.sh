#!/usr/bin/env bash
# npm run quickstart: makes sure the npm dependencies (and, as root, the system
# packages) are installed, then runs src/cli/quickstart.ts.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -d node_modules/tsx ] || [ ! -f build/Release/peercred.node ]; then
  echo "quickstart: installing npm dependencies (npm ci)…"
  npm ci --no-audit --no-fund
fi
missing=()
for t in swtpm swtpm_setup softhsm2-util; do command -v "$t" >/dev/null || missing+=("$t"); done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "quickstart: installing system packages for: ${missing[*]}"
    bash scripts/install-system-deps.sh
  else
    echo "quickstart: optional tools missing (${missing[*]}); run 'bash scripts/install-system-deps.sh' (as root or with sudo) for TPM attestation and an HSM-held CA and broker signing key. Continuing without them."
  fi
fi
exec node --import tsx src/cli/quickstart.ts "$@"
