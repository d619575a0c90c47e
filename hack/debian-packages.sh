#!/usr/bin/env bash
# Installs the Debian packages a part of SciTunnel needs, only those missing (nothing to do, and
# no `apt-get update`, when all are there). The one list of them: .ci/run, the local cluster,
# the demo and the benchmarks all come here.
#
#   hack/debian-packages.sh GROUP...     install what GROUP needs
#   hack/debian-packages.sh --list GROUP...   print the packages, one per line
#
# Groups: build, cluster (the local cluster's node runtime), demo, bench (the reference proxies
# and traffic generators), test (everything the test suite uses), all.
# Needs root and apt-get to install; otherwise it names the command to run and fails.
set -euo pipefail

declare -A GROUP=(
	[build]="git make ca-certificates curl unzip"
	[cluster]="containerd runc containernetworking-plugins iproute2 iptables conntrack openssl kmod procps util-linux"
	[demo]="iperf3"
	[bench]="iperf3 stunnel4 haproxy socat procps"
	# data-plane and sFlow tests: traffic generators, reference TLS proxies, capture and sFlow
	# peers, network namespaces and veths, firewall counters, TLS material
	[test]="iperf3 stunnel4 haproxy socat tshark pmacct tcpdump iproute2 iptables nftables conntrack ethtool openssl kmod procps util-linux"
)
GROUP[demo]+=" ${GROUP[cluster]}"
GROUP[all]="${GROUP[build]} ${GROUP[cluster]} ${GROUP[test]}"

list=0
if [[ "${1:-}" == --list ]]; then
	list=1
	shift
fi
(($# > 0)) || {
	echo "usage: $0 [--list] GROUP... (groups: ${!GROUP[*]})" >&2
	exit 2
}

declare -A seen=()
wanted=()
for g in "$@"; do
	[[ -n "${GROUP[$g]:-}" ]] || {
		echo "$0: unknown group '$g' (groups: ${!GROUP[*]})" >&2
		exit 2
	}
	for p in ${GROUP[$g]}; do
		[[ -n "${seen[$p]:-}" ]] && continue
		seen[$p]=1
		wanted+=("$p")
	done
done
if ((list)); then
	printf '%s\n' "${wanted[@]}"
	exit 0
fi

installed() { [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" == "install ok installed" ]]; }
missing=()
for p in "${wanted[@]}"; do
	installed "$p" || missing+=("$p")
done
((${#missing[@]} == 0)) && exit 0

if [[ $(id -u) != 0 ]] || ! command -v apt-get >/dev/null; then
	echo "missing Debian packages: ${missing[*]}" >&2
	echo "install them as root: apt-get install ${missing[*]}" >&2
	exit 1
fi
echo "installing Debian packages: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# tshark (wireshark-common) asks whether non-root users may capture: answer before installing.
echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
