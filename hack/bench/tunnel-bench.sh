#!/usr/bin/env bash
# Throughput, CPU cost and added latency of SciTunnel's tunnel pair against anchors measured in
# the same run on IPv6 loopback: iperf3 direct, through a stunnel4 TLS pair, a haproxy TLS pair,
# a socat plain relay, and through scitunnel in TLS (mutual TLS 1.3) and plain TCP mode.
#
# Usage: hack/bench/tunnel-bench.sh [seconds per run (default 8)]
# Needs: iperf3 stunnel4 haproxy socat openssl, and bin/scitunnel + bin/pingpong (make builds them).
# Prints a table and the ratios the project's goals are stated in; a benchmark, not a test.
set -euo pipefail
T=${1:-8}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SCITUNNEL=${SCITUNNEL:-$ROOT/bin/scitunnel}
PINGPONG=${PINGPONG:-$ROOT/bin/pingpong}
for tool in iperf3 stunnel4 haproxy socat openssl "$SCITUNNEL" "$PINGPONG"; do
	command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done

W=$(mktemp -d)
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$W"
}
trap cleanup EXIT
cd "$W"

# One CA and leaf pair for every TLS proxy, so they all do the same cryptography (ECDSA P-256).
"$SCITUNNEL" certs --out "$W/pki" --server-name localhost --server-ip ::1 >/dev/null
cat pki/server.key pki/server.crt >pki/server-both.pem
cat pki/client.key pki/client.crt >pki/client-both.pem

port() { python3 -c 'import socket;s=socket.socket(socket.AF_INET6);s.bind(("::1",0));print(s.getsockname()[1])'; }
listening() { for _ in $(seq 200); do ss -Hltn "sport = :$1" | grep -q . && return 0; sleep 0.05; done; echo "port $1 never listened" >&2; return 1; }
start() { "$@" >"$W/log.$(basename "$1").$RANDOM" 2>&1 & PIDS+=($!); LAST=$!; }

# cputicks PID...: user+system CPU of the processes and their reaped children, in clock ticks.
cputicks() {
	local sum=0 p
	for p in "$@"; do
		[ -r "/proc/$p/stat" ] || continue
		# fields after the ")" of the command name: utime=12 stime=13 cutime=14 cstime=15
		sum=$((sum + $(sed 's/.*) //' "/proc/$p/stat" | awk '{print $12+$13+$14+$15}')))
	done
	echo "$sum"
}
HZ=$(getconf CLK_TCK)

SRV=$(port)
ECHO=$(port)
start iperf3 -s -p "$SRV"
start "$PINGPONG" -serve "[::1]:$ECHO"
listening "$SRV"
listening "$ECHO"

declare -A GBPS1 GBPS4 CPU RTT
ORDER=()

# measure NAME ENTRY_IPERF ENTRY_ECHO PROXY_PIDS...
measure() {
	local name=$1 entry=$2 echo_entry=$3
	shift 3
	ORDER+=("$name")
	listening "$entry"
	local before after out
	before=$(cputicks "$@")
	out=$(iperf3 -6 -c ::1 -p "$entry" -t "$T" -f g 2>&1)
	after=$(cputicks "$@")
	GBPS1[$name]=$(awk '/receiver/ {for (i = 1; i <= NF; i++) if ($i == "Gbits/sec") v = $(i-1)} END {print v}' <<<"$out")
	if [ -z "${GBPS1[$name]}" ]; then echo "$name: iperf3 failed: $out" >&2; GBPS1[$name]=0; fi
	if [ $# -gt 0 ] && [ "${GBPS1[$name]}" != 0 ]; then
		# CPU seconds of the proxies per Gbit carried (both ends together).
		CPU[$name]=$(awk -v t=$((after - before)) -v hz="$HZ" -v g="${GBPS1[$name]}" -v s="$T" 'BEGIN {printf "%.3f", (t / hz) / (g * s)}')
	else
		CPU[$name]="-"
	fi
	out=$(iperf3 -6 -c ::1 -p "$entry" -t "$T" -P 4 -f g 2>&1)
	GBPS4[$name]=$(awk '/SUM.*receiver/ {for (i = 1; i <= NF; i++) if ($i == "Gbits/sec") v = $(i-1)} END {print v}' <<<"$out")
	[ -n "${GBPS4[$name]}" ] || GBPS4[$name]=0
	listening "$echo_entry"
	RTT[$name]=$("$PINGPONG" -connect "[::1]:$echo_entry" -n 20000 | awk '{print $1}')
}

echo "Measuring ${T}s per run on $(nproc) cores ($(uname -r)); this takes about $((T * 2 * 6 + 60)) s."

measure direct "$SRV" "$ECHO"

# stunnel4: a TLS pair, one server and one client process, each with the iperf and echo service.
A=$(port); B=$(port); EA=$(port); EB=$(port)
cat >s-srv.conf <<EOF
foreground = yes
pid =
[iperf]
accept = :::$B
connect = ::1:$SRV
cert = $W/pki/server.crt
key = $W/pki/server.key
[echo]
accept = :::$EB
connect = ::1:$ECHO
cert = $W/pki/server.crt
key = $W/pki/server.key
EOF
cat >s-cli.conf <<EOF
foreground = yes
pid =
[iperf]
client = yes
accept = :::$A
connect = ::1:$B
[echo]
client = yes
accept = :::$EA
connect = ::1:$EB
EOF
start stunnel4 s-srv.conf; P1=$LAST
start stunnel4 s-cli.conf; P2=$LAST
listening "$B"
measure stunnel4 "$A" "$EA" "$P1" "$P2"

# haproxy: one process holding both ends of the TLS pair.
A=$(port); B=$(port); EA=$(port); EB=$(port)
cat >h.cfg <<EOF
global
  maxconn 1000
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend fcli
  bind :::$A
  default_backend bcli
backend bcli
  server s1 ::1:$B ssl verify none
frontend fsrv
  bind :::$B ssl crt $W/pki/server-both.pem
  default_backend bsrv
backend bsrv
  server s2 ::1:$SRV
frontend ecli
  bind :::$EA
  default_backend becli
backend becli
  server e1 ::1:$EB ssl verify none
frontend esrv
  bind :::$EB ssl crt $W/pki/server-both.pem
  default_backend besrv
backend besrv
  server e2 ::1:$ECHO
EOF
start haproxy -f h.cfg; P1=$LAST
measure haproxy "$A" "$EA" "$P1"

# socat: a plain relay (forks a child per connection).
A=$(port); EA=$(port)
start socat "TCP6-LISTEN:$A,fork,reuseaddr" "TCP6:[::1]:$SRV"; P1=$LAST
start socat "TCP6-LISTEN:$EA,fork,reuseaddr" "TCP6:[::1]:$ECHO"; P2=$LAST
measure socat-plain "$A" "$EA" "$P1" "$P2"

# scitunnel: an inbound and an outbound end, mutual TLS, then plain TCP mode.
for mode in TLS TCP; do
	A=$(port); B=$(port); EA=$(port); EB=$(port)
	tlsIn=() tlsOut=()
	if [ "$mode" = TLS ]; then
		tlsIn=(--cert pki/server.crt --key pki/server.key --ca pki/ca.crt --allow-client spiffe://scitunnel.local/client)
		tlsOut=(--cert pki/client.crt --key pki/client.key --ca pki/ca.crt --server-name localhost)
	fi
	start "$SCITUNNEL" inbound --protocol "$mode" --listen "$B,$EB" --target "[::1]:$SRV,[::1]:$ECHO" \
		--admin "[::1]:$(port)" "${tlsIn[@]}"; P1=$LAST
	start "$SCITUNNEL" outbound --protocol "$mode" --listen "$A,$EA" --remote "[::1]:$B,$EB" \
		--admin "[::1]:$(port)" "${tlsOut[@]}"; P2=$LAST
	listening "$B"
	measure "scitunnel-$(tr '[:upper:]' '[:lower:]' <<<"$mode")" "$A" "$EA" "$P1" "$P2"
done

echo
printf '%-16s %12s %12s %14s %12s\n' path "1 stream" "4 streams" "CPU s/Gbit" "RTT p50 us"
for n in "${ORDER[@]}"; do
	printf '%-16s %10s G %10s G %14s %12s\n' "$n" "${GBPS1[$n]}" "${GBPS4[$n]}" "${CPU[$n]}" "${RTT[$n]}"
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b == 0) print "n/a"; else printf "%.2f", a / b}'; }
echo
echo "Ratios (goal in brackets):"
for s in 1 4; do
	declare -n G="GBPS$s"
	echo "  $s stream(s): scitunnel-tls/stunnel4 $(ratio "${G[scitunnel-tls]}" "${G[stunnel4]}") [>= 1.5]" \
		" scitunnel-tls/haproxy $(ratio "${G[scitunnel-tls]}" "${G[haproxy]}") [>= 2]" \
		" scitunnel-tcp/direct $(ratio "${G[scitunnel-tcp]}" "${G[direct]}") [>= 0.7]"
	unset -n G
done
echo "  CPU per Gbit: scitunnel-tls/stunnel4 $(ratio "${CPU[scitunnel-tls]}" "${CPU[stunnel4]}") [< 1]"
added() { awk -v a="$1" -v d="${RTT[direct]}" 'BEGIN {printf "%.1f", a - d}'; }
echo "  added RTT (1 KB ping-pong): scitunnel-tls $(added "${RTT[scitunnel-tls]}") us, stunnel4 $(added "${RTT[stunnel4]}") us [ours <= stunnel4's]"
