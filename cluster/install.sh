#!/usr/bin/env bash
# Install a single-node Slurm cluster (with accounting) on Debian/Ubuntu.
# Idempotent: returns immediately when every package is already installed.
set -euo pipefail

log() { echo "[install] $*"; }

PKGS=(munge slurmctld slurmd slurm-client slurmdbd mariadb-server mariadb-client)

missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    log "all packages already installed: ${PKGS[*]}"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "[install] ERROR: must run as root" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# Refresh the package lists only when they are missing or older than a day.
if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mmin -1440 2>/dev/null | head -1)" ]; then
    log "apt-get update"
    apt-get update -q
fi
log "installing: ${missing[*]}"
if ! apt-get install -y -q --no-install-recommends "${missing[@]}"; then
    log "install failed, retrying after apt-get update"
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
log "done: $(dpkg-query -W -f='${Version}' slurmctld | sed 's/^/slurm /')"
