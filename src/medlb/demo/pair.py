"""`medlb demo --pair` (as root): the clustered pair in network namespaces.

Two medlb nodes (lb-a, lb-b) run the issue's example `ha:` section as written, each
in a namespace of its own with its own keepalived; two simulated web servers and a
client sit on the same segment (a bridge in a switch namespace), so the operator
can kill the active node and watch the VIP move. Nothing touches the host's own
network: every namespace is named `medlbdemo-<pid>-<role>`, every link is created
inside them, and all of it is removed on Ctrl-C, on SIGTERM and when the start
fails (processes running in the namespaces are ended first, keepalived included,
which outlives a medlb killed with -9 by design). Namespaces a killed demo left are
removed by the next one.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import yaml

from medlb.demo import medlb_command

PREFIX = "medlbdemo"
SEGMENT_PREFIX = 24
CLIENT = "198.18.0.2"
NODES = {"lb-a": ("198.18.0.4", 150), "lb-b": ("198.18.0.5", 100)}
SERVERS = {"web1": "198.18.0.11", "web2": "198.18.0.12"}
VIP = "198.18.0.100"
INTERFACE = "lb0"  # the example's interface name
SERVER_PORT = 8080
#: How long the pair has to elect an active node and serve through the VIP.
START_TIMEOUT = 60.0

#: A web server that says its name (run with `python -c` inside a server namespace).
WEB_SERVER = """
import http.server, sys
name = sys.argv[1]
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"served by {name}\\n".encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("0.0.0.0", int(sys.argv[2])), Handler).serve_forever()
"""


class DemoError(Exception):
    """The demo cannot start; says why."""


def _run(*argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise DemoError(f"{' '.join(argv)} failed: {done.stderr.strip() or done.stdout.strip()}")
    return done


def _namespaces() -> list[str]:
    return [line.split()[0] for line in _run("ip", "netns", "list").stdout.splitlines() if line.strip()]


def _delete(netns: str) -> None:
    """End what runs inside (only our own namespaces' processes), then delete it."""
    for pid in _run("ip", "netns", "pids", netns, check=False).stdout.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
    _run("ip", "netns", "del", netns, check=False)


def remove_stale() -> None:
    """Namespaces of an earlier demo whose process is gone (it was killed)."""
    for netns in _namespaces():
        match = re.fullmatch(rf"{PREFIX}-(\d+)-[\w-]+", netns)
        if match and int(match.group(1)) != os.getpid() and not Path(f"/proc/{match.group(1)}").exists():
            _delete(netns)


class PairDemo:
    """The namespaces, the processes in them, and their removal."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.namespaces: list[str] = []
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def netns(self, role: str) -> str:
        return f"{PREFIX}-{os.getpid()}-{role}"

    def in_ns(self, role: str, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.netns(role), *argv]

    def build(self) -> None:
        remove_stale()
        for role in ("sw", "cli", *NODES, *SERVERS):
            _run("ip", "netns", "add", self.netns(role))
            self.namespaces.append(self.netns(role))
            _run("ip", "-n", self.netns(role), "link", "set", "lo", "up")
        switch = self.netns("sw")
        _run("ip", "-n", switch, "link", "add", "br0", "type", "bridge")
        _run("ip", "-n", switch, "link", "set", "br0", "up")
        hosts = {"cli": CLIENT, **{name: node[0] for name, node in NODES.items()}, **SERVERS}
        for role, address in hosts.items():
            interface = INTERFACE if role in NODES else "eth0"
            _run("ip", "-n", switch, "link", "add", f"p-{role}", "type", "veth", "peer", "name", interface,
                 "netns", self.netns(role))
            _run("ip", "-n", switch, "link", "set", f"p-{role}", "master", "br0", "up")
            _run("ip", "-n", self.netns(role), "addr", "add", f"{address}/{SEGMENT_PREFIX}", "dev", interface)
            _run("ip", "-n", self.netns(role), "link", "set", interface, "up")

    def start(self, name: str, role: str, argv: Sequence[str]) -> None:
        log = open(self.workdir / f"{name}.log", "ab")
        self.processes[name] = subprocess.Popen(self.in_ns(role, argv), stdout=log, stderr=subprocess.STDOUT,
                                                stdin=subprocess.DEVNULL, cwd=self.workdir)
        log.close()

    def client(self, *argv: str, timeout: float = 10) -> subprocess.CompletedProcess[str]:
        return _run(*self.in_ns("cli", argv), check=False, timeout=timeout)

    def holder(self) -> str | None:
        for name in NODES:
            shown = _run("ip", "-n", self.netns(name), "-o", "-4", "addr", "show", "dev", INTERFACE, check=False)
            if f" {VIP}/" in shown.stdout:
                return name
        return None

    def close(self) -> None:
        """medlb first (SIGTERM: it stops its keepalived), then everything else."""
        for name, process in self.processes.items():
            if name in NODES and process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        for netns in reversed(self.namespaces):
            _delete(netns)
        self.namespaces.clear()


def pair_config(workdir: Path) -> dict:
    """The issue's example, with this demo's files and one service on the VIP."""
    return {
        "admin": {"listen": "0.0.0.0:9443", "token_file": str(workdir / "token")},
        "ha": {"nodes": [{"name": name, "address": address, "priority": priority}
                         for name, (address, priority) in NODES.items()],
               "interface": INTERFACE, "virtual_router_id": 51, "advert_interval": "500ms", "preempt": False,
               "vips": [f"{VIP}/{SEGMENT_PREFIX}"], "sync_token_file": str(workdir / "ha-token")},
        "services": [{"name": "viewer", "mode": "tcp", "listen": f"{VIP}:80",
                      "health": {"type": "http", "path": "/", "interval": "1s", "timeout": "500ms"},
                      "servers": [{"name": name, "address": f"{address}:{SERVER_PORT}"}
                                  for name, address in SERVERS.items()]}],
    }


def _medlb() -> list[str]:
    return [sys.executable, "-m", "medlb"]


def banner(demo: PairDemo, active: str, config_path: Path) -> str:
    passive = next(name for name in NODES if name != active)
    ns = {role: demo.netns(role) for role in ("cli", *NODES)}
    ctl = f"MEDLB_TOKEN_FILE={demo.workdir / 'token'} {medlb_command()} ctl --insecure --url https://127.0.0.1:9443"
    return f"""
medlb demo --pair is running (Ctrl-C stops it and removes its namespaces)

  config (the same file on both nodes): {config_path}
  lb-a: namespace {ns['lb-a']}, medlb pid {demo.processes['lb-a'].pid}, log {demo.workdir / 'lb-a.log'}
  lb-b: namespace {ns['lb-b']}, medlb pid {demo.processes['lb-b'].pid}, log {demo.workdir / 'lb-b.log'}
  active now: {active} (holds {VIP}); {passive} is passive

Watch the VIP answer and who holds it (in a second terminal):
  watch -n 0.5 'ip netns exec {ns['cli']} curl -s --max-time 1 http://{VIP}/; \\
    ip -n {ns['lb-a']} -br -4 addr show dev {INTERFACE}; ip -n {ns['lb-b']} -br -4 addr show dev {INTERFACE}'

Kill the active node and watch the VIP move to {passive} (within about 3 s):
  kill -9 {demo.processes[active].pid}                  # medlb of {active}: its keepalived's check fails
  ip netns exec {ns[active]} ip link set {INTERFACE} down      # or: {active} drops off the network

The pair's view, and moving the VIPs by hand:
  ip netns exec {ns[active]} env {ctl} ha status
  ip netns exec {ns[active]} env {ctl} ha release --yes     # {active} gives the VIP to {passive}
  ip netns exec {ns[active]} env {ctl} ha takeover --yes    # and takes it back (preempt is off)
"""


def _log_tail(demo: PairDemo, name: str) -> str:
    try:
        return (demo.workdir / f"{name}.log").read_text(errors="replace")[-3000:]
    except OSError:
        return ""


def _wait_active(demo: PairDemo, stopping: Callable[[], bool]) -> str:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if stopping():
            raise DemoError("stopped before the pair served")
        for name in NODES:
            process = demo.processes[name]
            if process.poll() is not None:
                raise DemoError(f"medlb of {name} exited with {process.returncode}:\n{_log_tail(demo, name)}")
        active = demo.holder()
        if active is not None and "served by" in demo.client("curl", "-s", "--max-time", "1",
                                                               f"http://{VIP}/").stdout:
            return active
        time.sleep(0.2)
    raise DemoError(f"no node served {VIP} within {START_TIMEOUT:g} s; the nodes' logs:\n"
                    + "\n".join(f"--- {name}\n{_log_tail(demo, name)}" for name in NODES))


def run_pair_demo(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        print("medlb demo --pair needs root: it creates network namespaces and runs keepalived in them "
              "(run it with sudo); nothing was changed", file=sys.stderr)
        return 2
    missing = [tool for tool in ("ip", "keepalived") if shutil.which(tool) is None]
    if missing:
        print(f"medlb demo --pair needs {' and '.join(missing)} (apt install iproute2 keepalived); "
              "nothing was changed", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="medlb-demo-pair-"))
    os.chmod(workdir, 0o700)
    demo = PairDemo(workdir)
    stop = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        import secrets

        (workdir / "token").write_text(secrets.token_urlsafe(24) + "\n")
        (workdir / "ha-token").write_text(secrets.token_urlsafe(24) + "\n")
        config_path = workdir / "medlb.yaml"
        config_path.write_text("# written by medlb demo --pair: the same file on both nodes\n"
                               + yaml.safe_dump(pair_config(workdir), sort_keys=False))
        demo.build()
        for name, address in SERVERS.items():
            demo.start(name, name, [sys.executable, "-c", WEB_SERVER, name, str(SERVER_PORT)])
        for name in NODES:
            demo.start(name, name, [*_medlb(), "run", "-c", str(config_path), "--state-dir",
                                    str(workdir / name / "state")])
        active = _wait_active(demo, lambda: stop)
        print(banner(demo, active, config_path), flush=True)
        while not stop:
            time.sleep(0.2)
        return 0
    except DemoError as exc:
        print(f"medlb demo --pair cannot start: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        demo.close()
        shutil.rmtree(workdir, ignore_errors=True)
        print("medlb demo --pair stopped; its namespaces are removed", flush=True)
