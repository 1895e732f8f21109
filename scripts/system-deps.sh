#!/usr/bin/env bash
# Installs the Debian packages medlb's tests and demo need, when they are missing.
# Run as root on Debian; elsewhere it only says what is missing. Later modes add their
# interop peers here (dcmtk, orthanc, nftables, chromium). haproxy, iperf3, wrk and
# nginx are the benchmark's peers; the tests run the harness once, briefly.
set -euo pipefail

packages=(python3 python3-venv python3-dev gcc make curl procps iproute2 netcat-openbsd ca-certificates git
          haproxy iperf3 wrk nginx-light orthanc orthanc-dicomweb)

missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  echo "system-deps: missing Debian packages (install them as root): ${missing[*]}" >&2
  exit 0
fi
echo "system-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
