#!/usr/bin/env bash
# Install what switchboard's demo, lab and tests need beyond the Rust toolchain,
# on Debian, only when something is missing. Safe to run again.
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1; }
have ip       || need+=(iproute2)
have ping     || need+=(iputils-ping)
have arping   || need+=(iputils-arping)
have iperf3   || need+=(iperf3)
have ethtool  || need+=(ethtool)
have curl     || need+=(curl)
have tcpdump  || need+=(tcpdump)
have ps       || need+=(procps)
have nft      || need+=(nftables)
have clang    || need+=(clang)         # the ECMP-ER XDP agent is C, compiled at build time
[ -f /usr/include/bpf/bpf_helpers.h ] || need+=(libbpf-dev)
have nginx    || need+=(nginx)         # the ECMP-ER demo's servers
have ab       || need+=(apache2-utils) # ApacheBench, the ECMP-ER demo's load
have tshark   || need+=(tshark)        # the IP-TFS tests' independent ESP decryptor
# Optional: the benchmark's Open vSwitch baseline (skipped with a reason when absent).
optional=()
have ovs-vswitchd || optional+=(openvswitch-switch)

if [ ${#need[@]} -eq 0 ] && [ ${#optional[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "ensure-deps: missing packages: ${need[*]} ${optional[*]} (run as root to install them)" >&2
  exit 0
fi
echo "ensure-deps: installing ${need[*]} ${optional[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
if [ ${#need[@]} -gt 0 ]; then
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if [ ${#optional[@]} -gt 0 ]; then
  apt-get install -y -qq --no-install-recommends "${optional[@]}" >/dev/null \
    || echo "ensure-deps: optional ${optional[*]} did not install; the bench skips Open vSwitch" >&2
fi
# Packages that start system daemons (nginx, Open vSwitch): the lab and the benchmark run
# private ones.
if systemctl is-active --quiet nginx 2>/dev/null; then
  systemctl stop nginx 2>/dev/null || true
fi
if systemctl is-active --quiet openvswitch-switch 2>/dev/null; then
  systemctl stop openvswitch-switch 2>/dev/null || true
fi
