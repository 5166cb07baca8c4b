# Shared by the benchmark scripts beside it: sourced, never run. Each script
# sets `set -euo pipefail`, changes to the repository's root and sources this.
#
#   workdir NAME             a fresh $WORK, cleaned up on exit (kept when KEEP_WORK=1);
#                            a script's own `cleanup_more` runs first if defined
#   port tcp|udp             a free loopback port
#   ticks PID...             CPU ticks (user + system) of the processes; HZ per second
#   wait_for LOG TEXT        waits up to 20 s for a line with TEXT
#   wait_http URL            waits up to 20 s for URL to answer 2xx
#   field LOG TEXT NAME      NAME=value of the first line with TEXT
#   counter PORT FAMILY      sum of a counter family on a /metrics page
#   origin_toml              $WORK/origin.toml with every listener on a free loopback
#                            port (RTMP, SRT, OMOQ, OHTTP); append the streams
#   bench_clip 3m|6m         makes (once) and prints the pre-encoded 720p30 test clip
#                            (path without extension; .flv and .ts)
#   start_origin_edge KEY NS a release origin with one RTMP stream and an edge
#                            pulling from it (EDGE_MOQT_HOST: the edge's MoQT address)
#   push_clip CLIP URL       pushes a clip over RTMP, looped, in the background
#   start_nginx_rtmp         Debian's nginx-rtmp on NGINX_PORT, pid NGINX

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/strom-target}"
HZ=$(getconf CLK_TCK)

workdir() {
  WORK=$(mktemp -d "/tmp/strom-$1.XXXX")
  trap _cleanup EXIT
}

_cleanup() {
  if declare -F cleanup_more >/dev/null; then cleanup_more || true; fi
  kill $(jobs -p) 2>/dev/null || true
  wait 2>/dev/null || true
  if [ "${KEEP_WORK:-}" = 1 ]; then echo "work directory (logs): $WORK" >&2; else rm -rf "$WORK"; fi
}

port() {
  python3 -c 'import socket,sys; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM if sys.argv[1]=="udp" else socket.SOCK_STREAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' "$1"
}

ticks() {
  local t=0 p
  for p in "$@"; do t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat"))); done
  echo "$t"
}

wait_for() {
  for _ in $(seq 100); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    sleep 0.2
  done
  echo "no \"$2\" in $1 after 20 s" >&2
  return 1
}

wait_http() {
  for _ in $(seq 100); do
    curl -sf -o /dev/null "$1" && return 0
    sleep 0.2
  done
  echo "$1 did not answer within 20 s" >&2
  return 1
}

field() { grep "$2" "$1" | head -1 | sed -E "s/.* $3=([^ ]+).*/\1/"; }

counter() {
  curl -s "http://127.0.0.1:$1/metrics" | awk -v n="$2" 'index($1, n) == 1 {s += $2} END {printf "%d", s}'
}

bench_clip() {
  local clip=$HOME/.cache/strom-bench-clip-720p30-$1 rate gop secs
  case $1 in
    3m) rate=2800k; gop=30; secs=60 ;;
    6m) rate=5800k; gop=60; secs=120 ;;
    *) echo "bench_clip: 3m or 6m" >&2; return 2 ;;
  esac
  if [ ! -s "$clip.flv" ]; then
    ffmpeg -hide_banner -loglevel error -y \
      -f lavfi -i "testsrc2=size=1280x720:rate=30:duration=$secs" \
      -f lavfi -i "sine=frequency=1000:sample_rate=48000:duration=$secs" \
      -c:v libx264 -preset veryfast -profile:v main -pix_fmt yuv420p \
      -g $gop -keyint_min $gop -sc_threshold 0 -b:v $rate -maxrate $rate -bufsize $rate \
      -c:a aac -b:a 128k -ar 48000 -ac 2 -f flv "$clip.flv"
  fi
  if [ ! -s "$clip.ts" ]; then
    ffmpeg -hide_banner -loglevel error -y -i "$clip.flv" -c copy -f mpegts "$clip.ts"
  fi
  echo "$clip"
}

origin_toml() {
  RTMP=$(port tcp); SRT=$(port udp); OHTTP=$(port tcp); OMOQ=$(port udp)
  cat > "$WORK/origin.toml" <<TOML
data_dir = "$WORK/origin"
[origin]
rtmp_listen = "127.0.0.1:$RTMP"
rtmps_listen = "127.0.0.1:$(port tcp)"
srt_listen = "127.0.0.1:$SRT"
moqt_listen = "127.0.0.1:$OMOQ"
http_listen = "127.0.0.1:$OHTTP"
vod_listen = "127.0.0.1:$(port tcp)"
TOML
}

start_origin_edge() {
  origin_toml
  cat >> "$WORK/origin.toml" <<TOML
[[origin.streams]]
app = "live"
key = "$1"
namespace = "$2"
TOML
  STROM_LOG=warn,strom_origin=info "$BIN" --config "$WORK/origin.toml" origin 2> "$WORK/origin.log" &
  ORIGIN=$!
  wait_for "$WORK/origin.log" "origin ready"
  EHTTP=$(port tcp); EMETRICS=$(port tcp); EMOQ=$(port udp)
  cat > "$WORK/edge.toml" <<TOML
data_dir = "$WORK/edge"
[edge]
moqt_listen = "${EDGE_MOQT_HOST:-127.0.0.1}:$EMOQ"
http_listen = "127.0.0.1:$EHTTP"
metrics_listen = "127.0.0.1:$EMETRICS"
[[edge.upstream]]
url = "moqt://127.0.0.1:$OMOQ"
cert_sha256 = "$(field "$WORK/origin.log" "origin ready" cert_sha256)"
TOML
  STROM_LOG=warn,strom_relay=info,strom_edge=info "$BIN" --config "$WORK/edge.toml" edge 2> "$WORK/edge.log" &
  EDGE=$!
  wait_for "$WORK/edge.log" "edge ready"
  ECERT=$(field "$WORK/edge.log" "edge ready" cert_sha256)
}

push_clip() {
  ffmpeg -hide_banner -loglevel error -re -stream_loop -1 -i "$1.flv" -c copy -f flv "$2" 2>> "$WORK/ffmpeg.log" &
}

start_nginx_rtmp() {
  command -v nginx >/dev/null || apt-get install -y -qq nginx-light libnginx-mod-rtmp >/dev/null
  NGINX_PORT=$(port tcp)
  cat > "$WORK/nginx.conf" <<CONF
load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;
daemon off;
master_process off;
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log;
events { worker_connections 1024; }
rtmp { server { listen 127.0.0.1:$NGINX_PORT; application live { live on; record off; } } }
CONF
  nginx -c "$WORK/nginx.conf" &
  NGINX=$!
  sleep 1
}
