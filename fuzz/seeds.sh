#!/usr/bin/env bash
# Regenerates the seed corpus in fuzz/corpus/<target>/ from real tools:
# ffmpeg writes a second of tiny H.264/HEVC + AAC as FLV, MPEG-TS and CMAF
# (cut into boxes and NAL units by the Python below); examples/seeds.rs
# publishes the FLV over rml_rtmp's client, encodes MoQT streams with
# moq-transport and mints tokens with strom-token (built in its own target
# directory, not fuzz-instrumented). Needs ffmpeg (apt-get install ffmpeg).
#
# Usage: fuzz/seeds.sh            (replaces the committed seeds)
set -euo pipefail
cd "$(dirname "$0")"
corpus="$PWD/corpus"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

ff() { ffmpeg -hide_banner -loglevel error -y "$@"; }
src=(-f lavfi -i "testsrc2=size=160x96:rate=10:duration=1" -f lavfi -i "sine=frequency=440:sample_rate=22050:duration=1")
x264=(-c:v libx264 -preset ultrafast -crf 40 -g 5 -keyint_min 5 -pix_fmt yuv420p -bf 2)
x265=(-c:v libx265 -preset ultrafast -crf 40 -g 5 -keyint_min 5 -pix_fmt yuv420p -x265-params log-level=error)
aac=(-c:a aac -b:a 24k -ac 1)

ff "${src[@]}" "${x264[@]}" "${aac[@]}" -f flv "$tmp/h264.flv"
ff "${src[@]}" -an "${x264[@]}" -f flv "$tmp/video-only.flv"
ff "${src[@]}" -vn "${aac[@]}" -f flv "$tmp/audio-only.flv"
ff "${src[@]}" "${x264[@]}" "${aac[@]}" -muxdelay 0 -muxpreload 0 -f mpegts "$tmp/h264.ts"
ff "${src[@]}" "${x265[@]}" "${aac[@]}" -muxdelay 0 -muxpreload 0 -f mpegts "$tmp/hevc.ts"
cmaf=(-movflags cmaf+frag_keyframe+empty_moov+default_base_moof -write_prft wallclock -f mp4)
ff "${src[@]}" "${x264[@]}" -an "${cmaf[@]}" "$tmp/h264-cmaf.mp4"
ff "${src[@]}" "${x265[@]}" -tag:v hvc1 -an "${cmaf[@]}" "$tmp/hevc-cmaf.mp4"
ff "${src[@]}" -vn "${aac[@]}" "${cmaf[@]}" "$tmp/aac-cmaf.mp4"
ff "${src[@]}" "${x264[@]}" -an -f h264 "$tmp/h264.264"
ff "${src[@]}" "${x265[@]}" -an -f hevc "$tmp/hevc.265"

for t in rtmp_ingest flv_tags ts_demux avc_config hevc_config cmaf_parse moqt_control moqt_data \
  hls_request participants_csv token_verify; do
  # Crash reproducers (crash-*, oom-*, timeout-*) stay: CI replays them.
  mkdir -p "$corpus/$t"
  find "$corpus/$t" -type f ! -name 'crash-*' ! -name 'oom-*' ! -name 'timeout-*' -delete
done

python3 - "$tmp" "$corpus" <<'EOF'
import struct, sys, os
tmp, corpus = sys.argv[1], sys.argv[2]

def put(target, name, data):
    with open(os.path.join(corpus, target, name), "wb") as f:
        f.write(data)

def read(name):
    with open(os.path.join(tmp, name), "rb") as f:
        return f.read()

def boxes(data, start=0, end=None):
    end = len(data) if end is None else end
    i = start
    while i + 8 <= end:
        size, kind = struct.unpack(">I4s", data[i:i + 8])
        if size < 8 or i + size > end:
            break
        yield kind.decode("latin1"), i, size
        i += size

def find(data, path, start=0, end=None):
    """The body of the first box along `path` (sample entries skip their fixed fields)."""
    skip = {"stsd": 8, "avc1": 78, "hvc1": 78, "mp4a": 28}
    kind, rest = path[0], path[1:]
    for k, at, size in boxes(data, start, end):
        if k == kind:
            body = at + 8 + skip.get(k, 0)
            if not rest:
                return data[body:at + size]
            return find(data, rest, body, at + size)
    return None

def nal_units(stream):
    units, i, start = [], 0, None
    while i + 3 <= len(stream):
        if stream[i:i + 3] == b"\0\0\1":
            if start is not None:
                units.append(stream[start:i].rstrip(b"\0"))
            i += 3
            start = i
        else:
            i += 1
    if start is not None:
        units.append(stream[start:])
    return units

# FLV files as they are.
for name in ["h264.flv", "video-only.flv", "audio-only.flv"]:
    put("flv_tags", name, read(name))

# MPEG-TS: the read size byte first (164 -> 1313 bytes, about an SRT packet;
# 22 -> 177 bytes, splitting every TS packet).
for name in ["h264.ts", "hevc.ts"]:
    ts = read(name)[:188 * 60]
    put("ts_demux", name + "-srt", bytes([164]) + ts)
    put("ts_demux", name + "-split", bytes([22]) + ts[:188 * 20])

# CMAF: the init segment, and fragments (styp/prft/moof/mdat up to the next moof).
for name in ["h264-cmaf.mp4", "hevc-cmaf.mp4", "aac-cmaf.mp4"]:
    mp4 = read(name)
    top = list(boxes(mp4))
    moov = [i for i, (k, _, _) in enumerate(top) if k == "moov"][0]
    init_end = top[moov][1] + top[moov][2]
    put("cmaf_parse", name + "-init", mp4[:init_end])
    frags, current = [], None
    for k, at, size in top[moov + 1:]:
        if k in ("styp", "prft") and current is None:
            current = at
        if k == "moof" and current is None:
            current = at
        if k == "mdat" and current is not None:
            frags.append(mp4[current:at + size])
            current = None
    for i, frag in enumerate(frags[:2]):
        put("cmaf_parse", f"{name}-chunk{i}", frag)

moov_path = ["moov", "trak", "mdia", "minf", "stbl", "stsd"]
avcc = find(read("h264-cmaf.mp4"), moov_path + ["avc1", "avcC"])
hvcc = find(read("hevc-cmaf.mp4"), moov_path + ["hvc1", "hvcC"])
assert avcc and hvcc, "no avcC/hvcC in ffmpeg's output"

def access_unit(units):
    """The first NAL units (parameter sets, SEI, the first slice, cut at 400
    bytes) with 4-byte lengths, as RTMP and CMAF carry them."""
    out = b""
    for u in units[:8]:
        u = u[:400]
        out += struct.pack(">I", len(u)) + u
    return out

h264 = nal_units(read("h264.264"))
sps = [u for u in h264 if u and u[0] & 0x1F == 7]
put("avc_config", "avcc", bytes([0]) + avcc)
put("avc_config", "sps", bytes([1]) + sps[0])
put("avc_config", "avcc-and-au", bytes([2]) + struct.pack(">H", len(avcc)) + avcc + access_unit(h264))

hevc = nal_units(read("hevc.265"))
kind = lambda u: (u[0] >> 1) & 0x3F
vps = [u for u in hevc if u and kind(u) == 32]
hsps = [u for u in hevc if u and kind(u) == 33]
pps = [u for u in hevc if u and kind(u) == 34]
put("hevc_config", "hvcc", bytes([0]) + hvcc)
put("hevc_config", "sps", bytes([1]) + hsps[0])
put("hevc_config", "parameter-sets", bytes([2]) + b"".join(b"\0\0\0\1" + u for u in (vps[0], hsps[0], pps[0])))
put("hevc_config", "hvcc-and-au", bytes([3]) + struct.pack(">H", len(hvcc)) + hvcc + access_unit(hevc))
EOF

# Participant CSV: what spreadsheets write (comma, semicolon, BOM, quoting, CRLF).
csv="$corpus/participants_csv"
printf 'email,name,company,role,consent,assistant,password\nada@example.com,Ada Lovelace,Analytical Engines,speaker,true,,\nbob@example.org,"Müller, Bob",ACME,attendee,false,assist@example.org,Correct-Horse-9-Battery\n' >"$csv/comma.csv"
printf '\xef\xbb\xbfemail;name;company;role;consent\r\nANNA@EXAMPLE.DE;Anna Schmidt;Stadtwerke;attendee;ja\r\nx@y;=HYPERLINK("http://x");"Q ""uoted""";speaker;1\r\n' >"$csv/semicolon-bom.csv"
printf 'email,name,company,status,created_at\nc@example.com,Carol,Co,registered,2026-01-01T00:00:00Z\n,Missing Mail,Co,,\nd@example.com,,,,\n' >"$csv/export-format.csv"

# HLS/VOD requests: path?query, Cookie, Authorization, then a playlist.
# @T@ becomes a fresh play token for t/e/s inside the target.
hls="$corpus/hls_request"
playlist='#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-MAP:URI="init.mp4"\n#EXT-X-PART:DURATION=0.5,URI="3.0.m4s"\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI="3.1.m4s"\n#EXTINF:1.0,\n2.m4s\n'
printf "/hls/t/e/s/master.m3u8?token=@T@\n\n\n$playlist" >"$hls/master-query-token"
printf "/hls/t/e/s/video/playlist.m3u8?_HLS_msn=3&_HLS_part=1\nstrom_token=@T@; other=1\n\n$playlist" >"$hls/playlist-cookie"
printf "/hls/t/e/s/video/3.1.m4s?token=@T@\n\n\n" >"$hls/part"
printf "/hls/t/e/s/audio/init.mp4\nstrom_token=\"@T@\"\n\n" >"$hls/init-cookie"
printf "/vod/t/e/s/1767225600000/video/3.m4s\n\nBearer @T@\n" >"$hls/vod-bearer"
printf "/vod/t/e/s/1767225600000/index.m3u8?token=@T@\n\n\n$playlist" >"$hls/vod-playlist"
printf "/vod/t/../../etc/passwd\n\n\n" >"$hls/vod-traversal"

# The seeds made with strom's and the libraries' own encoders.
CARGO_TARGET_DIR="${STROM_SEEDS_TARGET_DIR:-$HOME/.cache/strom-fuzz-seeds-target}" \
  cargo run --quiet --example seeds -- "$corpus" "$tmp/h264.flv"

du -sh "$corpus"
for t in "$corpus"/*/; do printf '%-18s %3d seeds\n' "$(basename "$t")" "$(ls "$t" | wc -l)"; done
