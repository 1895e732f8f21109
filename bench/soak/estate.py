"""The soak's estate: one medlb (workers: 2) with a service of every layer 7 mode, each
in front of three real servers, and the configs the chaos loop reloads it with.

The peers are the tests' own (tests/helpers.py, tests/dicom_helpers.py, tests/peers/):
a name-then-echo TCP server, dcmtk storescp and a pynetdicom SCP, python-hl7 MLLP
engines that log every message they take (so an AA can be traced to a real engine), and
uvicorn HTTP servers. Each can be killed with SIGKILL and started again on its port.
This module only starts, stops and describes; chaos.py decides when.
"""

from __future__ import annotations

import copy
import socket
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))  # reuse the tests' peers and medlb runner

from dicom_helpers import DicomPeers, dicom_service  # noqa: E402
from helpers import LOOPBACK, TOKEN, Backends, Medlb, free_ports, http_service, server, service  # noqa: E402

MODES = ("tcp", "dicom", "mllp", "http")
#: Health checks run this often in every service: a client failure that starts more
#: than one interval after the API showed its server down is medlb's fault.
HEALTH_INTERVAL = 1.0
HEALTH = {"interval": "1s", "timeout": "800ms", "rise": 2, "fall": 2}
#: The medlb answer a sender gets when no engine acknowledged in time: at most
#: ack_timeout per attempt, 1 + retries attempts.
MLLP = {"ack_timeout": "5s", "retries": 2}
ACK_WAIT = 5.0 * 3 + 10.0
WORKERS = 2


def service_name(mode: str) -> str:
    return f"soak-{mode}"


@dataclass
class Peer:
    """One real server: start() and kill() block (a start waits until it listens)."""

    mode: str
    name: str
    port: int
    launch: Callable[[], object]
    stop: Callable[[], None]
    running: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def start(self) -> None:
        self.launch()
        self.running = True

    def kill(self) -> None:
        """SIGKILL: no goodbye to medlb, as when a machine loses power."""
        self.running = False
        self.stop()


class Estate:
    """The peers, the medlb in front of them, and the port a refused reload tries to take."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.backends = Backends()
        self.dicom = DicomPeers(workdir)
        ports = free_ports(len(MODES) + 3 * len(MODES) + 1)
        self.vips = dict(zip(MODES, ports))
        peer_ports = iter(ports[len(MODES):-1])
        self.engine_logs: list[Path] = []
        self.peers: dict[str, Peer] = {}
        for index in (1, 2, 3):
            self._add("tcp", f"t{index}", next(peer_ports))
            self._add("dicom", f"d{index}", next(peer_ports))
            self._add("mllp", f"e{index}", next(peer_ports))
            self._add("http", f"h{index}", next(peer_ports))
        # A port held open all run: a config that listens on it must be refused at bind.
        self.taken = socket.socket()
        self.taken.bind((LOOPBACK, ports[-1]))
        self.taken.listen(1)
        self.medlb: Medlb | None = None
        #: What helpers.Medlb adds to the first config (admin listener and token, state_dir):
        #: every later config keeps it, or a reload would take the API away.
        self.fixed: dict[str, Any] = {}

    def _add(self, mode: str, name: str, port: int) -> None:
        launch: Callable[[], object]
        stop: Callable[[], None]
        extra: dict[str, Any] = {}
        if mode == "tcp":
            launch, stop = (lambda: self.backends.start(name, port)), (lambda: self.backends.kill(name))
        elif mode == "mllp":
            log = self.workdir / f"engine-{name}.jsonl"
            self.engine_logs.append(log)
            launch, stop = (lambda: self.backends.start_mllp(name, port, log)), (lambda: self.backends.kill(name))
        elif mode == "http":
            launch, stop = (lambda: self.backends.start_http(name, port)), (lambda: self.backends.kill(name))
        elif name == "d2":
            # pynetdicom answers only to its own AE title: medlb must rewrite the called AE.
            extra["ae_title"] = "PACS2"
            launch, stop = (lambda: self.dicom.scp(name, "PACS2", port)), (lambda: self.dicom.kill(name))
        else:
            extra["ae_title"] = f"STORESCP{name[-1]}"
            launch = lambda: self.dicom.storescp(name, extra["ae_title"], port)
            stop = lambda: self.dicom.kill(name)
        self.peers[name] = Peer(mode, name, port, launch, stop, extra=extra)

    def of(self, mode: str) -> list[Peer]:
        return [peer for peer in self.peers.values() if peer.mode == mode]

    # --- configs ---------------------------------------------------------------------

    def config(self, variant: int) -> dict[str, Any]:
        """A valid config; variant 1 gives the first server of each service weight 3."""
        weights = self.weights(variant)

        def servers(mode: str) -> list[dict[str, Any]]:
            return [server(p.name, p.port, weight=weights[p.name], **p.extra) for p in self.of(mode)]

        health = dict(HEALTH)
        return {
            **copy.deepcopy(self.fixed),
            "workers": WORKERS,
            "log": {"level": "info"},
            "stop_timeout": "2s",
            "services": [
                service(service_name("tcp"), self.vips["tcp"], servers("tcp"), scheduler="leastconn",
                        health={"type": "tcp", **health}),
                dicom_service(service_name("dicom"), self.vips["dicom"], servers("dicom"),
                              health={"type": "dicom-echo", **health}, dicom={"ae_title": "MEDLB"}),
                {"name": service_name("mllp"), "mode": "mllp", "listen": [f"{LOOPBACK}:{self.vips['mllp']}"],
                 "mllp": dict(MLLP), "health": {"type": "mllp", **health}, "servers": servers("mllp")},
                http_service(service_name("http"), self.vips["http"], servers("http"),
                             health={"type": "http", "path": "/health", **health}),
            ],
        }

    def weights(self, variant: int) -> dict[str, int]:
        return {name: 3 if variant == 1 and name[1:] == "1" else 1 for name in self.peers}

    def refused_config(self, variant: int, kind: str) -> dict[str, Any]:
        """A config that must be refused, with weights that differ from `variant`'s, so a
        refusal that still changed something shows. `schema`: a weight out of range;
        `bind`: a new service on a port that is taken."""
        config = copy.deepcopy(self.config(1 - variant))
        if kind == "schema":
            config["services"][0]["servers"][1]["weight"] = 5000
        else:
            config["services"].append(service("soak-blocked", self.taken.getsockname()[1],
                                               [server("b1", self.peers["t1"].port)], health={"type": "none"}))
        return config

    # --- life ------------------------------------------------------------------------

    def start(self) -> Medlb:
        """Every peer, then medlb; raises if any of them cannot start."""
        with ThreadPoolExecutor(len(self.peers)) as pool:  # each waits for its peer to listen
            for started in [pool.submit(peer.start) for peer in self.peers.values()]:
                started.result()
        (self.workdir / "medlb").mkdir(exist_ok=True)
        self.medlb = Medlb(self.workdir / "medlb", self.config(0))
        self.fixed = {key: self.medlb.config[key] for key in ("admin", "state_dir")}
        self.medlb.start(timeout=90)  # a busy machine: the soak should start, not judge start-up
        return self.medlb

    def stop(self) -> int | None:
        """Stop medlb (SIGTERM; its exit code) and every peer; safe after a partial start."""
        code = self.medlb.stop() if self.medlb is not None and self.medlb.proc is not None else None
        self.backends.stop_all()
        self.dicom.stop_all()
        self.taken.close()
        return code


__all__ = ["ACK_WAIT", "HEALTH_INTERVAL", "MODES", "TOKEN", "Estate", "Peer", "service_name"]
