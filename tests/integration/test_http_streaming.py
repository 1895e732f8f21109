"""200 MB up and 200 MB down through mode: http with medlb's memory bounded: bodies are
streamed, never held whole (XDS MTOM uploads, WADO retrievals)."""

from __future__ import annotations

import hashlib

import httpx
import pytest

from helpers import LOOPBACK, free_ports, http_service, peak_rss_bytes, server

SIZE = 200 * 1024 * 1024
PIECE = bytes(range(256)) * 4096  # 1 MB


@pytest.mark.slow
def test_200mb_upload_and_download_stream_with_bounded_memory(medlb, backends):
    vip, pa = free_ports(2)
    backends.start_http("A", pa)
    lb = medlb([http_service("wado", vip, [server("a", pa)])])
    lb.wait_health("wado", "a", "up", 10)
    base = f"http://{LOOPBACK}:{vip}"
    with httpx.Client(base_url=base, timeout=120) as client:
        client.get("/name")  # warm up: the first request's code paths are loaded
        before = lb.rss_bytes()

        def body():
            for _ in range(SIZE // len(PIECE)):
                yield PIECE

        expected = hashlib.sha256()
        for _ in range(SIZE // len(PIECE)):
            expected.update(PIECE)
        uploaded = client.post("/upload", content=body())  # chunked: no Content-Length
        assert uploaded.status_code == 200
        assert uploaded.json() == {"bytes": SIZE, "sha256": expected.hexdigest(), "name": "A"}

        received = 0
        with client.stream("GET", f"/download/{SIZE}") as response:
            assert response.status_code == 200
            for chunk in response.iter_raw():
                received += len(chunk)
        assert received == SIZE
        peak = peak_rss_bytes(lb.proc.pid)
    growth = peak - before
    print(f"\nmedlb RSS before {before / 2**20:.1f} MiB, peak {peak / 2**20:.1f} MiB, "
          f"growth {growth / 2**20:.1f} MiB for 200 MiB up and 200 MiB down")
    assert growth < 64 * 2**20, f"medlb grew by {growth / 2**20:.1f} MiB"
    view = lb.server("wado", "a")
    assert view["bytes_to_server"] >= SIZE and view["bytes_to_client"] >= SIZE
