#!/usr/bin/env python3
"""A WAN delay line: bridges two interfaces at layer 2 (AF_PACKET) and holds
every frame for DELAY_MS, since this kernel has no netem. The rate limit is
tc tbf's job on the interfaces that send into it; QUEUE_BYTES bounds what
waits here (beyond it frames are dropped, like a router's buffer).

    delayline.py IF_A IF_B DELAY_MS QUEUE_BYTES     (run inside the wan netns)
"""
import heapq
import select
import socket
import sys
import time

a, b, delay, qlim = sys.argv[1], sys.argv[2], float(sys.argv[3]) / 1000, int(sys.argv[4])
ETH_P_ALL = 3
PACKET_OUTGOING = 4
socks = {}
for name in (a, b):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.bind((name, 0))
    s.setblocking(False)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    socks[name] = s
other = {a: b, b: a}
line = []  # (due, seq, out interface, frame)
held = {a: 0, b: 0}
seq = 0
while True:
    now = time.monotonic()
    while line and line[0][0] <= now:
        _, _, out, frame = heapq.heappop(line)
        held[other[out]] -= len(frame)
        try:
            socks[out].send(frame)
        except OSError:
            pass
    timeout = max(0.0, line[0][0] - now) if line else 0.05
    for s in select.select(list(socks.values()), [], [], timeout)[0]:
        src = a if s is socks[a] else b
        for _ in range(256):
            try:
                frame, addr = s.recvfrom(65535)
            except BlockingIOError:
                break
            if addr[2] == PACKET_OUTGOING:
                continue
            if held[src] + len(frame) > qlim:
                continue
            held[src] += len(frame)
            heapq.heappush(line, (time.monotonic() + delay, seq, other[src], frame))
            seq += 1
