#!/usr/bin/env bash
# Installs the Debian packages medlb's tests and demo need, when they are missing.
# Run as root on Debian; elsewhere it only says what is missing.
#   dcmtk    echoscu, storescu, storescp: DICOM clients and an SCP for the dicom mode's tests
#   orthanc  a real PACS that checks the called AE title (tests, C-FIND health check)
#   haproxy, iperf3, wrk, nginx-light: the benchmark's peers (the tests run the harness once, briefly)
#   chromium: the web page's browser tests
#   nftables, conntrack: the kernel layer 4 modes (nft applies medlb's tables; conntrack
#     cuts a NAT server's flows) and their tests in network namespaces
#   systemd  systemd-analyze, which checks the unit `make install` writes
#   prometheus  promtool, which checks docs/prometheus/medlb-alerts.yml (the daemon is not started)
set -euo pipefail

packages=(python3 python3-venv python3-dev gcc make curl procps iproute2 netcat-openbsd ca-certificates git
          dcmtk orthanc orthanc-dicomweb haproxy iperf3 wrk nginx-light chromium
          nftables conntrack systemd prometheus)

# keepalived: the clustered pair's VRRP (medlb renders its config; tests in namespaces run it)
packages+=(keepalived)
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
# The tests start their own peers on free ports: keep packages such as orthanc from
# starting a system daemon on install (the usual policy-rc.d way), unless the machine
# already has a policy of its own.
policy=/usr/sbin/policy-rc.d
own_policy=false
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 755 "$policy" && own_policy=true
  trap '[ "$own_policy" = true ] && rm -f "$policy"' EXIT
fi
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
