#!/usr/bin/env bash
# Sets up everything Lifeline and its lab need on a fresh Debian/Ubuntu machine:
# restic, OpenSSH, PostgreSQL server and client programs, pgBackRest, nginx (the lab's TLS in front of its S3),
# Kamailio and SIPp (the lab's carrier SBC and SIP agents), espeak-ng and sox (spoken announcements),
# iproute2, then the Python
# environment from the lock file. Safe to run again; installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(restic openssh-server openssh-client postgresql postgresql-client pgbackrest nginx-light kamailio sip-tester espeak-ng sox iproute2 procps util-linux passwd ca-certificates curl chromium)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
  sudo=""; [[ $(id -u) -eq 0 ]] || sudo="sudo"
  echo "setup: installing ${missing[*]}" >&2
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  # Debian starts a cluster, sshd, nginx and Kamailio on install; the lab runs its own, on its own ports.
  $sudo systemctl disable --now postgresql ssh nginx kamailio >/dev/null 2>&1 || true
  ! pgrep -x nginx >/dev/null || $sudo nginx -s quit 2>/dev/null || true
fi

if ! command -v uv >/dev/null 2>&1; then
  echo "setup: installing uv" >&2
  python3 -m pip install --quiet --user uv >&2 || python3 -m pip install --quiet --break-system-packages uv >&2
  export PATH="$HOME/.local/bin:$PATH"
fi
# Compiled bytecode up front: where PYTHONDONTWRITEBYTECODE is set, every `lifeline` process
# would otherwise compile Prefect from source (seconds of CPU per command).
uv sync --frozen --all-extras --compile-bytecode >&2
uv run --frozen python -m compileall -q configs flows tasks infra >&2
echo "setup: ready (restic $(restic version | cut -d' ' -f2), $(pg_config --version 2>/dev/null || echo PostgreSQL))" >&2
