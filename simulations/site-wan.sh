#!/usr/bin/env bash
# A branch site behind a WAN link, for the peer-assisted eCDN: origin and edge
# in the root namespace (the "internet"); a `wan` namespace holding a 20 ms
# delay line; a site router namespace; a LAN bridge with N viewer namespaces
# whose only way to the edge is that link, shaped with tc tbf (default
# 10 Mbit/s each way). Each viewer runs `strom watch` over MoQT for the given
# time; the script prints what each received, its latency, and the bytes the
# WAN carried in stream copies. Without peer-assist, N × the stream bitrate
# must cross the link. Run as root; cleans up after itself.
#
#   simulations/site-wan.sh [viewers, default 10] [seconds, default 60] [rate, default 10mbit]
#
# STROM_BIN picks the binary (default: the debug build in CARGO_TARGET_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-10}
SECS=${2:-60}
RATE=${3:-10mbit}
DELAY_MS=20
. simulations/lib.sh
BIN=${STROM_BIN:-$CARGO_TARGET_DIR/debug/strom}
[ -x "$BIN" ] || cargo build --workspace --bins -q
command -v ethtool >/dev/null || apt-get install -y -qq ethtool >/dev/null
KEEP_WORK=1; workdir site
P=s$$ # name prefix: several runs never collide
cleanup_more() {
  for ns in $(ip netns list | awk '{print $1}' | grep "^$P-" || true); do ip netns del "$ns"; done
  ip link del "$P-wi" 2>/dev/null || true
}
CLIP=$(bench_clip 3m)

# --- network: root (10.78.0.1) ⇄ wan (delay line) ⇄ rtr (10.78.0.2 | 10.77.0.1) ⇄ bridge ⇄ viewers 10.77.0.10+
# (private ranges the machine itself does not use; 192.0.2.0/24 is this host's own LAN)
ip netns add "$P-wan"
ip netns add "$P-rtr"
ip link add "$P-wi" type veth peer name wa netns "$P-wan"
ip link add wr netns "$P-rtr" type veth peer name wb netns "$P-wan"
ip addr add 10.78.0.1/24 dev "$P-wi"
ip link set "$P-wi" up
ip netns exec "$P-wan" ip link set wa up
ip netns exec "$P-wan" ip link set wb up
ip netns exec "$P-rtr" ip addr add 10.78.0.2/24 dev wr
ip netns exec "$P-rtr" ip link set wr up
ip netns exec "$P-rtr" ip link set lo up
ip netns exec "$P-rtr" sysctl -qw net.ipv4.ip_forward=1
ip route add 10.77.0.0/24 via 10.78.0.2 dev "$P-wi"
# Frames into the delay line must be whole and checksummed.
ethtool -K "$P-wi" tx off tso off gso off gro off >/dev/null 2>&1 || true
ip netns exec "$P-rtr" ethtool -K wr tx off tso off gso off gro off >/dev/null 2>&1 || true
# The WAN's rate: download (towards the site) and upload.
tc qdisc add dev "$P-wi" root tbf rate "$RATE" burst 32kb latency 100ms
ip netns exec "$P-rtr" tc qdisc add dev wr root tbf rate "$RATE" burst 32kb latency 100ms
ip netns exec "$P-wan" python3 simulations/delayline.py wa wb "$DELAY_MS" 262144 &
ip netns exec "$P-rtr" ip link add br0 type bridge
ip netns exec "$P-rtr" ip addr add 10.77.0.1/24 dev br0
ip netns exec "$P-rtr" ip link set br0 up
for i in $(seq "$N"); do
  ns="$P-v$i"
  ip netns add "$ns"
  ip link add l0 netns "$ns" type veth peer name "l$i" netns "$P-rtr"
  ip netns exec "$P-rtr" ip link set "l$i" master br0 up
  ip netns exec "$ns" ip addr add "10.77.0.$((9 + i))/24" dev l0
  ip netns exec "$ns" ip link set l0 up
  ip netns exec "$ns" ip link set lo up
  ip netns exec "$ns" ip route add default via 10.77.0.1
done

# --- origin and edge (the edge serves MoQT on 10.78.0.1)
KEY=site-key-0123456789abcdef
EDGE_MOQT_HOST=10.78.0.1 start_origin_edge "$KEY" site/event/main
push_clip "$CLIP" "rtmp://127.0.0.1:$RTMP/live/$KEY"
sleep 4
command -v ping >/dev/null && ip netns exec "$P-v1" ping -c 3 -q 10.78.0.1 | tail -1 | sed "s/^/WAN round trip: /" || true

# --- the viewers, all at once
before=$(cat "/sys/class/net/$P-wi/statistics/tx_bytes")
for i in $(seq "$N"); do
  ip netns exec "$P-v$i" "$BIN" watch "moqt://10.78.0.1:$EMOQ" site/event/main \
    --cert-sha256 "$ECERT" -o /dev/null --duration "$SECS" 2> "$WORK/viewer$i.log" &
  pids+=($!)
done
wait "${pids[@]}" || true
after=$(cat "/sys/class/net/$P-wi/statistics/tx_bytes")

# --- report: a healthy viewer gets ~30 video objects per second, latency well under a second
expected=$((SECS * 30))
echo "viewers: $N, ${SECS} s, WAN $RATE each way + ${DELAY_MS} ms; expected about $expected video objects per viewer"
ok=0
for i in $(seq "$N"); do
  last=$(grep "video:" "$WORK/viewer$i.log" | tail -1)
  objects=$(sed -nE 's/.*video: ([0-9]+) objects.*/\1/p' <<<"$last")
  p50=$(sed -nE 's/.*video: [^;]*latency p50 ([0-9.-]+) ms.*/\1/p' <<<"$last")
  p99=$(sed -nE 's/.*video: [^;]*p99 ([0-9.-]+) ms.*/\1/p' <<<"$last")
  verdict="stalled"
  if [ "${objects:-0}" -ge $((expected * 9 / 10)) ] && [ "${p99%.*}" != "-" ] && [ "${p99%.*}" -lt 2000 ] 2>/dev/null; then verdict="plays"; ok=$((ok + 1)); fi
  printf 'viewer %2d: %5s video objects, latency p50 %6s ms p99 %7s ms  %s\n' "$i" "${objects:-0}" "${p50:--}" "${p99:--}" "$verdict"
done
stream_mbit=$(python3 -c "import os; print(os.path.getsize('$CLIP.flv') * 8 / 60 / 1e6)")
python3 - "$before" "$after" "$SECS" "$stream_mbit" "$ok" "$N" <<'PY'
import sys
before, after, secs, stream, ok, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5], sys.argv[6]
wan = (after - before) * 8 / secs / 1e6
print(f"playing: {ok} of {n}; WAN carried {wan:.2f} Mbit/s towards the site = {wan / stream:.2f} copies of the {stream:.2f} Mbit/s stream")
PY
