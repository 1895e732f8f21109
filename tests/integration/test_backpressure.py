"""A slow reader must not make medlb buffer: memory stays flat while 1 GB passes."""

from __future__ import annotations

import threading
import time

from helpers import connect, free_ports, server, service

GIB = 1 << 30
MIB = 1 << 20


def test_slow_reader_of_1_gb_keeps_medlb_memory_bounded(medlb, backends):
    vip, pa = free_ports(2)
    backends.start("A", pa, bulk=GIB)
    # No health check: memory is the subject, and a 150 ms check timing out on a loaded
    # machine would mark A down and fail the test for another reason.
    lb = medlb([service("vna", vip, [server("A", pa)], health={"type": "none"})])
    baseline = lb.rss_bytes()
    peak = [baseline]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], lb.rss_bytes())
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    sock, name = connect(vip, timeout=60)
    received = 0
    next_pause = MIB
    try:
        # Read at a few hundred MB/s at most, slower than loopback can send.
        while piece := sock.recv(256 * 1024):
            received += len(piece)
            if received >= next_pause:
                time.sleep(0.004)
                next_pause += MIB
    finally:
        done.set()
        sampler.join()
        sock.close()

    growth = peak[0] - baseline
    print(f"1 GiB relayed to a slow reader; RSS summed over medlb's processes {baseline / MIB:.1f} MiB at start, "
          f"peak {peak[0] / MIB:.1f} MiB (growth {growth / MIB:.1f} MiB)")
    assert name == "A"
    assert received == GIB
    assert growth < 32 * MIB
    assert lb.server("vna", "A")["bytes_to_client"] == GIB + len(b"A\n")
