"""A real medlb process running inside a test namespace (the balancer), and its API.

medlb runs as `ip netns exec NS python -m medlb run`, so everything it does to the
kernel (nftables tables, VIPs, sysctls, conntrack) happens in that namespace and
vanishes with it. The admin API listens on the namespace's loopback, which the test
process (in the host's namespace) cannot reach; calls go through curl run inside.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from helpers import stop_process
from topology import Node

TOKEN = "netns-test-token-0123456789"
ADMIN_PORT = 9443


class MedlbNode:
    def __init__(self, node: Node, workdir: Path, services: list[dict[str, Any]], run_args: tuple[str, ...] = (),
                 **top: Any):
        self.node = node
        #: Added to `medlb run -c FILE` (a pair's --node and --state-dir).
        self.run_args = list(run_args)
        self.workdir = workdir
        self.config_path = workdir / "medlb.yaml"
        self.log_path = workdir / "medlb.log"
        self.config: dict[str, Any] = {
            "admin": {"listen": f"127.0.0.1:{ADMIN_PORT}", "token": TOKEN, "tls": "off"},
            "state_dir": str(workdir / "state"), "workers": 1, **top, "services": services}
        self.write_config()
        self.proc: subprocess.Popen[bytes] | None = None

    def write_config(self, services: list[dict[str, Any]] | None = None) -> None:
        if services is not None:
            self.config["services"] = services
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))

    # --- life cycle ----------------------------------------------------------------

    def start(self, wait: bool = True, timeout: float = 30) -> MedlbNode:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.node.argv([sys.executable, "-m", "medlb", "run", "-c",
                                                     str(self.config_path), *self.run_args]),
                                     stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir)
        log.close()
        if wait:
            deadline = time.monotonic() + timeout
            while not self._ready():
                if time.monotonic() > deadline:
                    raise AssertionError(f"medlb did not answer /healthz within {timeout} s:\n{self.log()}")
                time.sleep(0.1)
        return self

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"medlb exited with {self.proc.returncode}:\n{self.log()}")
        return self.api("GET", "/healthz", check=False)[0] == 200

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 30) -> int | None:
        """Signal medlb and wait for it (SIGKILL: it leaves the kernel as it was)."""
        if self.proc is None:
            return None
        code = stop_process(self.proc, signum, timeout)
        self.proc = None
        return code

    # --- the API, through curl in the namespace ----------------------------------------

    @property
    def url(self) -> str:
        """The admin API inside the namespace (HTTPS unless `admin.tls: off`; a pair's
        nodes must not turn it off, and their self-signed certificates are taken as they are)."""
        scheme = "http" if self.config["admin"].get("tls") == "off" else "https"
        return f"{scheme}://127.0.0.1:{ADMIN_PORT}"

    def api(self, method: str, path: str, body: Any = None, check: bool = True,
            token: str | None = TOKEN) -> tuple[int, Any]:
        """(status, JSON answer) of one call; `token` None sends no Authorization."""
        argv = ["curl", "-sS", "-k", "--max-time", "30", "-X", method,
                *(["-H", f"Authorization: Bearer {token}"] if token is not None else []),
                "-o", "-", "-w", "\n%{http_code}", f"{self.url}{path}"]
        if body is not None:
            argv += ["-H", "Content-Type: application/json", "--data-binary", json.dumps(body)]
        done = self.node.run(*argv, check=False, timeout=40)
        text, _, status_text = done.stdout.rpartition("\n")
        status = int(status_text) if status_text.strip().isdigit() else 0
        if check and not 200 <= status < 300:
            raise AssertionError(f"{method} {path}: {status} {text or done.stderr}\nmedlb log:\n{self.log()[-3000:]}")
        try:
            return status, json.loads(text) if text else None
        except json.JSONDecodeError:
            return status, text

    def service(self, name: str) -> dict[str, Any]:
        return self.api("GET", f"/api/v1/services/{name}")[1]

    def server(self, service: str, name: str) -> dict[str, Any]:
        return next(s for s in self.service(service)["servers"] if s["name"] == name)

    def set_state(self, service: str, server: str, state: str) -> None:
        self.api("POST", f"/api/v1/services/{service}/servers/{server}/state", {"state": state})

    def l4(self, service: str) -> dict[str, Any]:
        return self.api("GET", f"/api/v1/services/{service}/l4")[1]

    def wait_kernel(self, service: str, taking: set[str], timeout: float = 20) -> float:
        """Until exactly `taking` take new flows in the kernel; the seconds it took."""
        started = time.monotonic()
        while True:
            view = self.l4(service)
            now = {server["name"] for server in view["servers"] if server["takes_new_flows"]}
            if now == taking:
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise AssertionError(f"{service}: wanted {sorted(taking)} taking new flows, have {sorted(now)}\n"
                                     f"{self.log()[-3000:]}")
            time.sleep(0.05)

    def wait_health(self, service: str, health: dict[str, str], timeout: float = 20) -> None:
        """Until each named server has the health given (e.g. {"rs1": "up"})."""
        deadline = time.monotonic() + timeout
        while True:
            now = {s["name"]: s["health"] for s in self.service(service)["servers"]}
            if all(now.get(name) == wanted for name, wanted in health.items()):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{service}: wanted {health}, have {now}\n{self.log()[-3000:]}")
            time.sleep(0.1)
