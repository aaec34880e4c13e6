#!/usr/bin/env bash
# Installs the Debian packages warrant needs: swtpm and tpm2-tools (TPM
# attestation), softhsm2 (the HSM in tests), openssl (certificate cross-checks),
# build tools for the native addons, postgresql (the postgres datastore; tests
# start their own cluster with initdb/pg_ctl as the postgres user), chromium
# (the operator console's browser tests, driven by playwright-core). Safe to run again; needs root (or sudo).
set -euo pipefail
PKGS=(swtpm swtpm-tools tpm2-tools libtss2-tcti-swtpm0 softhsm2 openssl sqlite3 python3 make g++ procps postgresql chromium)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "system packages present: ${PKGS[*]}"
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "need root to install: ${missing[*]}" >&2; exit 1; }
  SUDO=sudo
fi
echo "installing: ${missing[*]}"
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
