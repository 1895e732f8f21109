"""This node of the pair at run time: keepalived started, adopted and watched, the
track script answered, and the role keepalived reports.

keepalived is medlb's child but not tied to it. It runs in a session of its own and
logs to `STATE/ha/keepalived.log`, not to a pipe, so it outlives a medlb killed with
-9: its track script (`medlb ha-alive`) then finds no one answering on
`STATE/ha/alive.sock`, and it gives the VIPs up to the peer. A medlb started again
finds it by its pid file and adopts it instead of starting a second one (two would
both send adverts from this node's address).

Role changes arrive on the notify FIFO, which medlb creates and keeps open for both
reading and writing: keepalived opens it the same way (O_RDWR, non-blocking), so
events written while medlb was down wait in the pipe and are read, in order, when it
returns, and a keepalived that exits never makes the reader see end-of-file. The last
role read is kept in `STATE/ha/role` for the next start.

Leaving: on SIGTERM medlb stops keepalived first (it removes the VIPs and sends a
priority-0 advert, so the peer takes over at once), then drains. A keepalived killed
with SIGKILL leaves its VIPs on the interface; medlb removes them before it starts
keepalived again, so the node does not answer for addresses the peer now holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import signal
import stat
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medlb.atomic import write_atomically
from medlb import logs
from medlb.config.models import HaConfig, HaNode
from medlb.ha import alive, keepalived
from medlb.ha.adverts import AdvertWatch, ClaimWatch
from medlb.ha.splitbrain import Episode, SplitBrainWatch, told_by_peer

log = logs.get_logger("medlb.ha")

#: keepalived's states as the notify FIFO names them, and the operator's words.
ROLE_WORDS = {"MASTER": "active", "BACKUP": "passive", "FAULT": "fault", "STOP": "stopped",
              "UNKNOWN": "unknown"}
ROLES = tuple(ROLE_WORDS)
#: How often medlb looks whether keepalived still runs, and how long it waits before
#: starting one that exited (doubling up to the maximum while it keeps exiting).
WATCH_EVERY = 1.0
RESTART_DELAY = 1.0
RESTART_DELAY_MAX = 30.0
#: How often a node with an open split-brain episode asks who has the VIPs.
PROBE_EVERY = 0.5
#: How long keepalived has to leave on SIGTERM (removing its VIPs) before SIGKILL.
STOP_TIMEOUT = 5.0
#: keepalived.log is moved aside to keepalived.log.1 when it is over this size at a start.
LOG_ROTATE_BYTES = 10 * 2**20

#: Called with (old role, new role) for every change keepalived reports.
RoleListener = Callable[[str, str], None]
#: Returns None when the data plane can serve, else why not.
AliveCheck = Callable[[], "str | None"]
#: Called with each split-brain episode once it has ended.
SplitBrainListener = Callable[[Episode], None]
#: What the track script hears while an operator releases this node.
RELEASED = "released by an operator (medlb ctl ha release): the peer takes the VIPs"


def parse_notify(line: str) -> str | None:
    """The state of our instance in one FIFO line (`INSTANCE "medlb" MASTER 150`), else None."""
    parts = line.split()
    if len(parts) >= 3 and parts[0] == "INSTANCE" and parts[1] == f'"{keepalived.VRRP_INSTANCE}"' \
            and parts[2] in ROLE_WORDS:
        return parts[2]
    return None


def running_pid(files: keepalived.NodeFiles) -> int | None:
    """The pid of the keepalived started on this node's config, from its pid file, if
    it still runs (checked by its command line, so a reused pid is not adopted)."""
    try:
        pid = int(files.pid.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    if not cmdline or not cmdline[0].endswith(b"keepalived") or str(files.config).encode() not in cmdline:
        return None
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return None
    return pid


def _ip_json(*args: str) -> Any:
    done = subprocess.run(["ip", "-j", *args], capture_output=True, text=True, timeout=10, check=True)
    return json.loads(done.stdout or "[]")


def held_vips(ha: HaConfig) -> list[str]:
    """The configured VIPs that are on the interface now (`198.18.0.100/24`)."""
    try:
        shown = _ip_json("-4", "addr", "show", "dev", ha.interface)
    except (OSError, subprocess.SubprocessError, ValueError):
        return []
    present = {ipaddress.IPv4Address(info["local"]) for link in shown for info in link.get("addr_info", [])}
    return [str(vip) for vip in ha.vips if vip.ip in present]


def remove_vips(ha: HaConfig) -> list[str]:
    """Remove the configured VIPs from the interface (a killed keepalived's leftovers)."""
    removed = []
    for vip in held_vips(ha):
        done = subprocess.run(["ip", "addr", "del", vip, "dev", ha.interface], capture_output=True, text=True,
                              timeout=10, check=False)
        if done.returncode == 0:
            removed.append(vip)
        else:
            log.error("ha_vip_not_removed", vip=vip, interface=ha.interface, error=done.stderr.strip())
    return removed


@dataclass
class RoleState:
    role: str = "UNKNOWN"
    since: float = 0.0


class PairNode:
    """keepalived for this node, the alive socket it asks, and the role it reports."""

    def __init__(self, ha: HaConfig, node: HaNode, state_dir: Path, medlb: Sequence[str],
                 check_alive: AliveCheck, on_role: RoleListener, keepalived_binary: str = "keepalived",
                 on_split_brain: SplitBrainListener | None = None):
        self.ha, self.node = ha, node
        self.peer = keepalived.nodes(ha, node.name)[1]
        self.files = keepalived.NodeFiles.under(state_dir)
        self.medlb = list(medlb)
        self.check_alive = check_alive
        self.on_role = on_role
        self.binary = keepalived_binary
        self.state = RoleState(since=time.time())
        self.pid: int | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.adopted = False
        self.restarts = 0
        self._stopping = False
        self._fifo: int | None = None
        self._partial = b""
        self._server: asyncio.AbstractServer | None = None
        self._watcher: asyncio.Task[None] | None = None
        #: Set while an operator releases this node: the track script hears RELEASED.
        self.released = False
        #: Held while a release or takeover runs (medlb.ha.handover): one at a time.
        self.handover_lock = asyncio.Lock()
        #: time.monotonic() of the peer's last advert with a priority above 0.
        self.peer_advert_at = float("-inf")
        quiet = max(3 * ha.advert_centiseconds / 100, 3 * PROBE_EVERY)
        self.split_brain = SplitBrainWatch(
            self.peer.priority, keepalived.TAKEOVER_PRIORITY, quiet,
            peer_preempts=ha.preempt and self.peer.priority > node.priority)
        self.on_split_brain = on_split_brain
        self.last_split_brain: Episode | None = None
        self._adverts = AdvertWatch(ha.interface, self.peer.address, ha.virtual_router_id, self._peer_advert)
        self._claims = ClaimWatch(ha.interface, node.address, [vip.ip for vip in ha.vips],
                                  lambda: self.split_brain.peer_claims_vip(time.time()))
        self._prober: asyncio.Task[None] | None = None

    @property
    def role(self) -> str:
        return self.state.role

    @property
    def role_file(self) -> Path:
        return self.files.directory / "role"

    @property
    def alive_socket(self) -> Path:
        return alive.socket_path(self.files.directory.parent)

    # --- start --------------------------------------------------------------------------

    async def start(self) -> None:
        """Answer the track script, listen to the FIFO, then adopt or start keepalived.
        Raises OSError (or ValueError for a state dir keepalived cannot be told) if any
        of it cannot be set up."""
        self.files.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        changed = self._write_config()
        await self._answer_alive()
        self._open_fifo()
        self._restore_role()
        self.split_brain.set_role(self.state.role, self.state.since)
        self._restore_split_brain()
        self._adverts.start()
        if self._claims.start():
            self._prober = asyncio.get_running_loop().create_task(self._probe())
        pid = running_pid(self.files)
        if pid is not None:
            self.pid, self.adopted = pid, True
            log.event("keepalived_adopted", pid=pid, node=self.node.name)
            if changed:
                os.kill(pid, signal.SIGHUP)  # keepalived reloads its config
                log.event("keepalived_reloaded", pid=pid, reason="its config changed")
        else:
            self._start_keepalived()
        self._watcher = asyncio.get_running_loop().create_task(self._watch())

    def _write_config(self, takeover: bool = False) -> bool:
        """Write keepalived.conf for this node; True when its text changed."""
        text = keepalived.render(self.ha, self.node.name, self.files,
                                 keepalived.alive_command(self.medlb, self.files), takeover)
        try:
            if self.files.config.read_text() == text:
                return False
        except OSError:
            pass
        write_atomically(self.files.config, text)
        return True

    async def _answer_alive(self) -> None:
        path = self.alive_socket
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # left by a medlb that was killed: nothing listens on it

        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            problem = "medlb is stopping" if self._stopping else RELEASED if self.released else self.check_alive()
            writer.write((alive.ALIVE if problem is None else f"dead: {problem}").encode() + b"\n")
            with contextlib.suppress(OSError):
                await writer.drain()
            writer.close()

        self._server = await asyncio.start_unix_server(answer, path=str(path))
        os.chmod(path, 0o600)

    def _open_fifo(self) -> None:
        path = self.files.notify_fifo
        with contextlib.suppress(FileNotFoundError):
            if not stat.S_ISFIFO(path.lstat().st_mode):
                path.unlink()
        if not path.exists():
            os.mkfifo(path, 0o600)
        self._fifo = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        asyncio.get_running_loop().add_reader(self._fifo, self._read_fifo)

    def _restore_role(self) -> None:
        try:
            saved = json.loads(self.role_file.read_text())
            self.state = RoleState(saved["role"], float(saved["since"]))
        except (OSError, ValueError, KeyError, TypeError):
            return

    def _start_keepalived(self) -> None:
        removed = remove_vips(self.ha)
        if removed:
            log.warning("ha_leftover_vips_removed", vips=removed, interface=self.ha.interface,
                        reason="a keepalived that was killed left them")
        for path in (self.files.pid, self.files.vrrp_pid):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        logfile = self.files.directory / "keepalived.log"
        with contextlib.suppress(OSError):
            if logfile.stat().st_size > LOG_ROTATE_BYTES:
                os.replace(logfile, logfile.with_name(logfile.name + ".1"))
        argv = keepalived.argv(self.files, self.binary)
        with open(logfile, "ab") as output:
            # A session of its own and a file for its output: it must outlive medlb.
            self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=output, stderr=output,
                                            start_new_session=True, close_fds=True)
        self.pid, self.adopted = self.process.pid, False
        log.event("keepalived_started", pid=self.pid, node=self.node.name, config=str(self.files.config),
                  log=str(logfile))

    # --- running ------------------------------------------------------------------------

    def _read_fifo(self) -> None:
        assert self._fifo is not None
        try:
            data = os.read(self._fifo, 65536)
        except BlockingIOError:
            return
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            role = parse_notify(line.decode("utf-8", "replace"))
            if role is not None:
                self._set_role(role)

    def _set_role(self, role: str) -> None:
        old = self.state.role
        if role == old:
            return
        self.state = RoleState(role, time.time())
        self._write_json(self.role_file, {"role": role, "since": self.state.since})
        self.split_brain.set_role(role, self.state.since)
        self.on_role(old, role)
        self._split_brain_due()

    def _write_json(self, path: Path, value: Any) -> None:
        with contextlib.suppress(OSError):
            write_atomically(path, json.dumps(value))

    # --- split brain --------------------------------------------------------------------

    @property
    def split_brain_file(self) -> Path:
        return self.files.directory / "split-brain"

    def _restore_split_brain(self) -> None:
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            self.last_split_brain = Episode.from_dict(json.loads(self.split_brain_file.read_text()))

    def _peer_advert(self, priority: int) -> None:
        if priority:
            self.peer_advert_at = time.monotonic()
        self.split_brain.peer_advert(priority, time.time())

    async def _probe(self) -> None:
        """While a split brain is open, ask who has the VIPs (the peer answers until it
        yields), and end episodes on time."""
        while True:
            await asyncio.sleep(PROBE_EVERY)
            if self.split_brain.open:
                self._claims.probe()
                self._split_brain_due()

    def _split_brain_due(self) -> None:
        for episode in self.split_brain.due(time.time()):
            self._record(episode)

    def peer_told(self, told: Any) -> None:
        """The peer's last episode, from its sync status: recorded here too when this
        node has none of it (medlb.ha.splitbrain.told_by_peer)."""
        if self.split_brain.settling:
            return
        episode = told_by_peer(told, self.last_split_brain)
        if episode is not None:
            self._record(episode)

    def _record(self, episode: Episode) -> None:
        self.last_split_brain = episode
        self._write_json(self.split_brain_file, episode.as_dict())
        if self.on_split_brain is not None:
            self.on_split_brain(episode)

    # --- a takeover's config (medlb.ha.handover) ----------------------------------------

    def reload_keepalived(self, takeover: bool) -> bool:
        """Render this node's config (for a takeover or back to normal) and tell
        keepalived to read it (SIGHUP); False when no keepalived runs to tell."""
        self._write_config(takeover)
        if self.pid is None or not self.keepalived_running():
            return False
        os.kill(self.pid, signal.SIGHUP)
        log.event("keepalived_reloaded", pid=self.pid, reason="takeover" if takeover else "takeover done")
        return True

    async def wait_for(self, settled: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not settled():
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    def keepalived_running(self) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        return self.pid is not None and running_pid(self.files) == self.pid

    async def _watch(self) -> None:
        delay = RESTART_DELAY
        while not self._stopping:
            await asyncio.sleep(WATCH_EVERY)
            self._split_brain_due()
            if self._stopping or self.keepalived_running():
                continue
            code = self.process.returncode if self.process is not None else None
            log.error("keepalived_exited", pid=self.pid, code=code, restart_in=delay,
                      log=str(self.files.directory / "keepalived.log"))
            self._set_role("STOP")
            await asyncio.sleep(delay)
            if self._stopping:
                return
            self.restarts += 1
            await asyncio.to_thread(self._start_keepalived)
            delay = min(delay * 2, RESTART_DELAY_MAX)

    # --- leaving ------------------------------------------------------------------------

    async def release(self) -> None:
        """Give the VIPs up: stop keepalived (it removes them and tells the peer), then
        remove any it left. Called before the data plane drains."""
        self._stopping = True
        if self._watcher is not None:
            self._watcher.cancel()
        if self.pid is not None and self.keepalived_running():
            log.event("keepalived_stopping", pid=self.pid, reason="medlb is stopping: the peer takes the VIPs")
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_TIMEOUT
            while self.keepalived_running() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if self.keepalived_running():
                log.error("keepalived_killed", pid=self.pid, reason=f"still running {STOP_TIMEOUT:g} s after SIGTERM")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
        self._read_fifo_rest()
        removed = await asyncio.to_thread(remove_vips, self.ha)
        if removed:
            log.warning("ha_leftover_vips_removed", vips=removed, interface=self.ha.interface,
                        reason="keepalived left them when it stopped")
        self._set_role("STOP")

    def _read_fifo_rest(self) -> None:
        if self._fifo is None:
            return
        with contextlib.suppress(OSError):
            self._read_fifo()

    async def close(self) -> None:
        """After the drain: stop answering and listening."""
        self._adverts.close()
        self._claims.close()
        if self._prober is not None:
            self._prober.cancel()
        if self._fifo is not None:
            asyncio.get_running_loop().remove_reader(self._fifo)
            os.close(self._fifo)
            self._fifo = None
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            with contextlib.suppress(FileNotFoundError):
                self.alive_socket.unlink()

    # --- what the API shows -------------------------------------------------------------

    async def view(self) -> dict[str, Any]:
        held = await asyncio.to_thread(held_vips, self.ha)
        return {
            "node": self.node.name, "address": str(self.node.address), "priority": self.node.priority,
            "role": self.state.role, "role_text": ROLE_WORDS[self.state.role],
            "since": self.state.since or None,
            "peer": {"name": self.peer.name, "address": str(self.peer.address), "priority": self.peer.priority},
            "interface": self.ha.interface, "vips": [str(vip) for vip in self.ha.vips], "vips_held": held,
            "preempt": self.ha.preempt,
            "released": self.released,
            "split_brain": None if self.last_split_brain is None else self.last_split_brain.as_dict(),
            "keepalived": {"pid": self.pid, "running": self.keepalived_running(), "adopted": self.adopted,
                           "restarts": self.restarts, "log": str(self.files.directory / "keepalived.log")},
            "sync": "the sync channel has not started",  # App.ha_view says what it syncs
        }
