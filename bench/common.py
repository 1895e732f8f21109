"""What every benchmark scenario shares: processes on loopback, A/B pairs, statistics.

A scenario measures medlb and its peer (HAProxy, or a direct connection) alternately,
A B A B ..., and reports the median of the per-pair ratios, so that a burst of noise
on a shared machine spoils one pair rather than the result. Every load is bounded in
count and in time, and talks only to 127.0.0.1.
"""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
LOOPBACK = "127.0.0.1"
ONE_MB = 1024 * 1024


@dataclass
class Row:
    """One line of the results table."""

    scenario: str
    unit: str
    medlb: float | None
    peer: float | None
    peer_name: str
    ratio: float | None
    target: str
    note: str = ""
    pairs: list[tuple[float, float]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


def free_ports(count: int) -> list[int]:
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind((LOOPBACK, 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


def wait_port(port: int, timeout: float = 15.0) -> None:
    """Wait until something listens on the port, without connecting to it (a probe
    connection would be relayed to the backend, and iperf3 takes it for a test)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            try:
                probe.bind((LOOPBACK, port))
            except OSError:
                return  # taken: the listener is up
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {LOOPBACK}:{port}")


class Process:
    """Any peer process (a backend, HAProxy), stopped on exit."""

    def __init__(self, args: list[str], ready_port: int | None = None, **popen: Any):
        self.args, self.ready_port, self.popen = args, ready_port, popen
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> "Process":
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **self.popen)
        if self.ready_port is not None:
            wait_port(self.ready_port)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid


class Medlb(Process):
    """medlb run in a subprocess from a list of service dicts."""

    def __init__(self, services: list[dict[str, Any]], workdir: Path, workers: int = 1):
        config = workdir / f"medlb-{workers}.yaml"
        config.write_text(yaml.safe_dump({"state_dir": str(workdir / "state"), "log": {"level": "warning"},
                                          "workers": workers, "stop_timeout": "1s", "services": services}))
        super().__init__([PYTHON, "-m", "medlb", "run", "-c", str(config)])


def haproxy_available() -> bool:
    return shutil.which("haproxy") is not None


def haproxy(config: str, workdir: Path, ready_port: int) -> Process:
    path = workdir / "haproxy.cfg"
    path.write_text(config)
    return Process(["haproxy", "-f", str(path), "-db"], ready_port=ready_port)


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def alternate(pairs: int, measure_medlb: Callable[[], float], measure_peer: Callable[[], float],
              higher_is_better: bool = True) -> tuple[float, float, float, list[tuple[float, float]]]:
    """Run A B A B ...; return medians of medlb, peer, the per-pair ratio, and the pairs."""
    results = []
    for _ in range(pairs):
        a = measure_medlb()
        b = measure_peer()
        results.append((a, b))
    ratios = [(a / b if higher_is_better else b / a) if a and b else 0.0 for a, b in results]
    return (statistics.median(a for a, _ in results), statistics.median(b for _, b in results),
            statistics.median(ratios), results)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def workdir(name: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"medlb-bench-{name}-"))


def env_with_src() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT / "src"))


def nginx_config(port: int, directory: Path, host: str = LOOPBACK) -> Path:
    """An nginx.conf answering `/` with 3 bytes and `/1m.bin` with 1 MiB, keep-alive on;
    one worker, so that it competes for the cores as one process. nginx must not be what
    limits a proxy in front of it: `/` is answered from the config (no file, no
    sendfile), and the 1 MiB file is kept open (`open_file_cache`) and sent by sendfile."""
    (directory / "www").mkdir(exist_ok=True)
    (directory / "www" / "1m.bin").write_bytes(b"m" * ONE_MB)
    # nginx's workers run as an unprivileged user; mkdtemp made the folder private.
    for path in (directory, directory / "www", directory / "www" / "1m.bin"):
        path.chmod(0o755)
    conf = directory / "nginx.conf"
    conf.write_text(f"""daemon off;
worker_processes 1;
pid {directory}/nginx.pid;
error_log {directory}/nginx-error.log;
events {{ worker_connections 20000; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    server {{
        listen {host}:{port} backlog=4096;
        root {directory}/www;
        location = / {{ return 200 "ok\\n"; }}
        location = /1m.bin {{
            sendfile on;
            open_file_cache max=16 inactive=10m;
            open_file_cache_valid 10m;
        }}
    }}
}}
""")
    return conf
