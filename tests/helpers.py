"""Test helpers that start real processes on loopback and talk to them.

No mocks: medlb runs as `python -m medlb run`, backends are separate processes that a
test can kill, and clients are plain sockets.
"""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import httpx
import psutil
import yaml

HERE = Path(__file__).parent
PEERS = HERE / "peers"
TOKEN = "test-admin-token-0123456789"
LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def free_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """Distinct free ports (held open together so none repeats)."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind((host, 0))
            socks.append(sock)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for sock in socks:
            sock.close()


def consecutive_free_ports(count: int, host: str = LOOPBACK) -> int:
    """The first of `count` consecutive free ports, for listen ranges."""
    for _ in range(200):
        first = free_port(host)
        if first + count > 65535:
            continue
        try:
            socks = []
            for port in range(first, first + count):
                sock = socket.socket()
                sock.bind((host, port))
                socks.append(sock)
            return first
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError("no run of free ports")


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.05,
               what: str = "condition") -> Any:
    """Poll until predicate() is truthy; returns its value or raises AssertionError."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def process_tree(pid: int) -> list[psutil.Process]:
    """A process and all its descendants (medlb: the control process and its workers)."""
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def peak_rss_bytes(pid: int) -> int:
    """The most resident memory the process has held since it started (VmHWM): catches
    a burst that a sample taken afterwards would miss."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


def tree_rss_bytes(pid: int) -> int:
    """Resident memory of a process and all its descendants, in bytes.

    With workers the relays run in the worker processes, so the control process alone
    would show nothing of what a relay holds: a memory bound must be checked on the sum.
    """
    total = 0
    for process in process_tree(pid):
        try:
            total += process.memory_info().rss
        except psutil.NoSuchProcess:  # a child that ended between the listing and the read
            pass
    return total


def _read_line(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        piece = sock.recv(1)
        if not piece:
            break
        data += piece
    return data


def connect(port: int, host: str = LOOPBACK, timeout: float = 5.0) -> tuple[socket.socket, str]:
    """Connect through medlb and read the backend's name line ('' if closed at once)."""
    sock = socket.create_connection((host, port), timeout=timeout)
    return sock, _read_line(sock).decode().strip()


def who_answers(port: int, host: str = LOOPBACK) -> str:
    """One short connection: the name of the backend that answered ('' if none)."""
    try:
        sock, name = connect(port, host)
    except OSError:
        return ""
    sock.close()
    return name


def echo(sock: socket.socket, data: bytes = b"ping\n") -> bytes:
    """Send data to an echoing backend and read the same number of bytes back."""
    sock.sendall(data)
    received = b""
    while len(received) < len(data):
        piece = sock.recv(len(data) - len(received))
        if not piece:
            break
        received += piece
    return received



class Backends:
    """Backend processes (tests/peers/tcp_server.py) that tests start and kill."""

    def __init__(self) -> None:
        self.procs: dict[str, subprocess.Popen[str]] = {}

    def start(self, name: str, port: int | list[int], host: str = LOOPBACK, bulk: int = 0) -> int | list[int]:
        ports = port if isinstance(port, list) else [port]
        args = [sys.executable, str(PEERS / "tcp_server.py"), "--name", name, "--host", host]
        for p in ports:
            args += ["--port", str(p)]
        if bulk:
            args += ["--bulk", str(bulk)]
        self.start_process(name, args)
        return port

    def start_process(self, name: str, args: list[str]) -> None:
        """Start a peer that prints `ready` once it listens."""
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        line = proc.stdout.readline() if proc.stdout else ""
        if line.strip() != "ready":
            proc.kill()
            raise RuntimeError(f"peer {name} did not start: {args}")
        self.procs[name] = proc

    def start_mllp(self, name: str, port: int, log: Path, mode: str = "aa") -> int:
        """A python-hl7 MLLP receiver (tests/peers/mllp_server.py) logging to `log`."""
        self.start_process(name, [sys.executable, str(PEERS / "mllp_server.py"), "--name", name,
                                  "--port", str(port), "--log", str(log), "--mode", mode])
        return port

    def start_http(self, name: str, port: int, cert: Path | None = None, key: Path | None = None,
                   health: int = 200, client_ca: Path | None = None) -> int:
        """A uvicorn HTTP(S) backend (tests/peers/http_server.py)."""
        args = [sys.executable, str(PEERS / "http_server.py"), "--name", name, "--port", str(port),
                "--health", str(health)]
        if cert is not None:
            args += ["--cert", str(cert), "--key", str(key)]
        if client_ca is not None:
            args += ["--client-ca", str(client_ca)]
        self.start_process(name, args)
        return port

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.kill()
        proc.wait()

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.kill(name)


def stop_process(proc: subprocess.Popen[bytes], signum: int, timeout: float) -> int:
    """Signal a process and wait for it; kill it if it outlives `timeout`. Its exit code."""
    if proc.poll() is None:
        proc.send_signal(signum)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


class Medlb:
    """One medlb process started from a config dict."""

    def __init__(self, workdir: Path, config: dict[str, Any]):
        self.workdir = workdir
        self.config_path = workdir / "medlb.yaml"
        self.log_path = workdir / "medlb.log"
        self.admin_port = free_port()
        # Plain HTTP on loopback unless a test asks for the default (HTTPS, self-signed).
        config.setdefault("admin", {"listen": f"{LOOPBACK}:{self.admin_port}", "token": TOKEN, "tls": "off"})
        config["admin"].setdefault("listen", f"{LOOPBACK}:{self.admin_port}")
        config.setdefault("state_dir", str(workdir / "state"))
        # One process unless a test asks for workers, or MEDLB_TEST_WORKERS runs the
        # whole suite with worker processes (the product's default is one per core).
        config.setdefault("workers", int(os.environ.get("MEDLB_TEST_WORKERS", "1")))
        self.write_config(config)
        self.proc: subprocess.Popen[bytes] | None = None
        self.scheme = "http" if config["admin"].get("tls") == "off" else "https"
        self.base_url = f"{self.scheme}://{LOOPBACK}:{self.admin_port}"
        # HTTPS tests check the certificate themselves (cert_path); this client only talks.
        self.client = httpx.Client(base_url=self.base_url, verify=False,
                                   headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)

    @property
    def cert_path(self) -> Path:
        return Path(self.config["state_dir"]) / "admin-tls" / "cert.pem"

    def write_config(self, config: dict[str, Any] | str) -> None:
        self.config = config
        text = config if isinstance(config, str) else yaml.safe_dump(config, sort_keys=False)
        self.config_path.write_text(text)

    def start(self, wait: bool = True, timeout: float = 30,
              open_files: tuple[int, int] | None = None) -> "Medlb":
        """`open_files`: (soft, hard) RLIMIT_NOFILE for the medlb process, as `prlimit` sets it."""
        log = open(self.log_path, "ab")
        limit = (lambda: resource.setrlimit(resource.RLIMIT_NOFILE, open_files)) if open_files else None
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "medlb", "run", "-c", str(self.config_path)],
            stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir, preexec_fn=limit)
        if wait:
            wait_until(self._ready, timeout, what=f"medlb to answer /healthz (log: {self.log_path})")
        return self

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"medlb exited with {self.proc.returncode}:\n{self.log()}")
        try:
            return httpx.get(f"{self.base_url}/healthz", timeout=1, verify=False).status_code == 200
        except httpx.HTTPError:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 20) -> int:
        if self.proc is None:
            return 0
        code = stop_process(self.proc, signal.SIGTERM, timeout)
        self.proc = None
        return code

    def rss_bytes(self) -> int:
        """Resident memory of the whole medlb process tree (see tree_rss_bytes)."""
        assert self.proc is not None
        return tree_rss_bytes(self.proc.pid)

    # --- API ---------------------------------------------------------------------

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.request(method, path, **kwargs)

    def service(self, name: str) -> dict[str, Any]:
        response = self.api("GET", f"/api/v1/services/{name}")
        response.raise_for_status()
        return response.json()

    def server(self, service: str, server: str) -> dict[str, Any]:
        return next(s for s in self.service(service)["servers"] if s["name"] == server)

    def set_state(self, service: str, server: str, state: str) -> httpx.Response:
        return self.api("POST", f"/api/v1/services/{service}/servers/{server}/state", json={"state": state})

    def wait_health(self, service: str, server: str, health: str, timeout: float) -> float:
        """Seconds until the server's health became `health`."""
        started = time.monotonic()
        wait_until(lambda: self.server(service, server)["health"] == health, timeout,
                   what=f"{service}/{server} to be {health}")
        return time.monotonic() - started


class MedlbFactory:
    def __init__(self, tmp_path: Path):
        self.tmp_path = tmp_path
        self.instances: list[Medlb] = []

    def __call__(self, services: list[dict[str, Any]], start: bool = True, **top: Any) -> Medlb:
        workdir = self.tmp_path / f"medlb{len(self.instances)}"
        workdir.mkdir()
        instance = Medlb(workdir, {**top, "services": services})
        self.instances.append(instance)
        return instance.start() if start else instance

    def stop_all(self) -> None:
        for instance in self.instances:
            instance.stop()


def service(name: str, listen: list[int] | int, servers: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """A tcp service dict on loopback with fast health checks (tests only)."""
    ports = listen if isinstance(listen, list) else [listen]
    base: dict[str, Any] = {
        "name": name,
        "mode": "tcp",
        "listen": [f"{LOOPBACK}:{p}" for p in ports],
        "health": {"type": "tcp", "interval": "200ms", "timeout": "150ms", "rise": 2, "fall": 2},
        "servers": servers,
    }
    base.update(extra)
    return base


def server(name: str, port: int | None, host: str = LOOPBACK, **extra: Any) -> dict[str, Any]:
    return {"name": name, "address": host if port is None else f"{host}:{port}", **extra}


os.environ.setdefault("PYTHONUNBUFFERED", "1")


def http_service(name: str, listen: int, servers: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """An http service dict on loopback with fast http health checks (tests only)."""
    base = service(name, listen, servers, mode="http")
    base["health"] = {"type": "http", "path": "/health", "interval": "200ms", "timeout": "150ms",
                      "rise": 2, "fall": 2}
    base.update(extra)
    return base


def matches_fixture(path: Path, text: str) -> None:
    """Assert `text` is the kept fixture at `path` (a rendering read by a person once);
    MEDLB_REGENERATE_FIXTURES=1 rewrites it instead, for a deliberate change."""
    if os.environ.get("MEDLB_REGENERATE_FIXTURES"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert text == path.read_text(), f"the rendering differs from {path}"
