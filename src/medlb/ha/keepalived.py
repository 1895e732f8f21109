"""keepalived's configuration and command line for one node of the pair.

Pure: `render` and `argv` return text and a list; nothing here runs or writes. medlb
runs Debian's keepalived as its own child (medlb.ha.supervisor), VRRP only (`-P`), with its config,
pid files and notify FIFO under `<state_dir>/ha/` and an `instance` name of its own,
so a keepalived the host runs for itself is never touched, and two nodes can share
one host in tests (each in its network namespace, each with its state directory).

Why the rendered config looks as it does:
- VRRPv3 (centisecond `advert_int`), unicast to the one listed peer, and
  `check_unicast_src`: adverts from any other address are dropped (a node outside
  the pair cannot claim the VIPs). v3 has no authentication; trust lives in the
  sync channel between the nodes' admin APIs.
- `state BACKUP` on both nodes: the election, not the file, picks the active one;
  `nopreempt` unless `preempt: true`, so a recovered node does not take the VIPs back.
- `track_script` with weight 0: when the local medlb says its data plane is not
  alive (or the check cannot run), the node goes to FAULT and gives up the VIPs.
  `track_process` does not work inside a network namespace.
- `vrrp_notify_fifo`: role changes reach medlb in order (notify scripts may race).
- Gratuitous ARPs: `garp_master_repeat` of them the moment a node becomes active,
  the same again `garp_master_delay` seconds later (a switch port that was still
  learning misses the first), and `garp_master_refresh` repeats them while active,
  so a client whose cache missed the takeover (keepalived issue #166, after a split
  brain) follows.
- A takeover (`medlb ctl ha takeover`) renders this node for a moment with
  `TAKEOVER_PRIORITY` and without `nopreempt`, so it wins the election at once even
  with `preempt: false`; medlb.ha.supervisor renders it back once it is active.

Every name and path written into the text is checked against a strict pattern
first (the config's node and interface names are already held to one), so no value
can add a keyword, a brace or a comment to keepalived's config.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from medlb.config.models import HaConfig, HaNode

#: The VRRP instance and track script names, the same on both nodes (the notify FIFO
#: names the instance: `INSTANCE "medlb" MASTER 150`).
VRRP_INSTANCE = "medlb"
ALIVE_SCRIPT = "medlb_alive"
#: Gratuitous ARPs sent on becoming active, the delay in seconds before the second
#: burst, and the seconds between refreshes while this node holds the VIPs.
GARP_MASTER_REPEAT = 3
GARP_MASTER_DELAY = 1
GARP_MASTER_REFRESH = 30
#: The priority a node takes over with: above any configured one (1 to 254), short
#: of 255 (VRRP's address owner). A node whose own priority is 254 takes over with it.
TAKEOVER_PRIORITY = 254
#: Failed alive checks in a row before the node gives up the VIPs, and passed ones
#: before it may hold them again. keepalived 2.2.7 runs a track script every whole
#: second at most often (`interval` 1 to 4294), so the check runs every advert
#: interval rounded up to a second: with the default 1 s a dead data plane gives the
#: VIPs up within 3 intervals; with shorter ones it takes 2 to 3 s (docs/ha.md).
ALIVE_FALL = 2
ALIVE_RISE = 2

#: What may appear unquoted in a path or a command word written into the config.
_SAFE_WORD = re.compile(r"^[A-Za-z0-9_./:=+-]+$")


@dataclass(frozen=True)
class NodeFiles:
    """Where one node's keepalived keeps its files: all in `<state_dir>/ha/`."""

    directory: Path

    @classmethod
    def under(cls, state_dir: Path) -> "NodeFiles":
        if not state_dir.is_absolute():
            raise ValueError(f"the state directory must be absolute for keepalived, not {str(state_dir)!r}")
        _safe(str(state_dir), "the state directory")
        return cls(state_dir / "ha")

    @property
    def config(self) -> Path:
        return self.directory / "keepalived.conf"

    @property
    def pid(self) -> Path:
        return self.directory / "keepalived.pid"

    @property
    def vrrp_pid(self) -> Path:
        return self.directory / "keepalived_vrrp.pid"

    @property
    def notify_fifo(self) -> Path:
        return self.directory / "notify.fifo"


def _safe(word: str, what: str) -> str:
    if not _SAFE_WORD.fullmatch(word):
        raise ValueError(f"{what} {word!r} cannot be written into keepalived's config: use letters, digits and "
                         "_ . / : = + - only")
    return word


def nodes(ha: HaConfig, name: str) -> tuple[HaNode, HaNode]:
    """This node and its peer, by this node's name."""
    mine = [node for node in ha.nodes if node.name == name]
    if not mine:
        raise ValueError(f"no node named {name!r} in ha.nodes (known: {', '.join(n.name for n in ha.nodes)})")
    [peer] = [node for node in ha.nodes if node.name != name]
    return mine[0], peer


def instance_name(node: HaNode) -> str:
    """keepalived's `instance`: its own names under /run/keepalived, apart from the host's."""
    return f"medlb-{node.name}"


def alive_command(medlb: Sequence[str], files: NodeFiles) -> list[str]:
    """The track script: asks this node's control process whether its data plane is
    alive. `medlb` is how to start medlb (`/usr/bin/medlb`, or python -m medlb); see
    medlb.ha.alive."""
    return [*medlb, "ha-alive", "--state-dir", str(files.directory.parent)]


def _seconds(centiseconds: int) -> str:
    """`0.5`, `1`, `40.95`: the shortest exact decimal of a whole number of centiseconds."""
    whole, part = divmod(centiseconds, 100)
    return str(whole) if part == 0 else f"{whole}.{part:02d}".rstrip("0")


def render(ha: HaConfig, node_name: str, files: NodeFiles, check: Sequence[str], takeover: bool = False) -> str:
    """keepalived.conf for node `node_name`; `check` is the track script's argv. With
    `takeover`, the node preempts with TAKEOVER_PRIORITY (see the module's docstring)."""
    node, peer = nodes(ha, node_name)
    for word in (node.name, ha.interface):
        _safe(word, "the name")
    command = " ".join(_safe(word, "the track script word") for word in check)
    if not command:
        raise ValueError("the track script needs a command")
    advert = _seconds(ha.advert_centiseconds)
    check_every = max(1, math.ceil(ha.advert_centiseconds / 100))
    lines = [
        "# Written by medlb from the ha: section; medlb rewrites it, do not edit.",
        f"# Node {node.name}, peer {peer.name}.",
        *(["# Taking over (medlb ctl ha takeover): medlb renders it back once this node is active."]
          if takeover else []),
        f"instance {instance_name(node)}",
        "",
        "global_defs {",
        f"    router_id {node.name}",
        "    vrrp_version 3",
        "    enable_script_security",
        "    script_user root",
        f"    vrrp_notify_fifo {_safe(str(files.notify_fifo), 'the notify FIFO')}",
        "}",
        "",
        f"vrrp_script {ALIVE_SCRIPT} {{",
        f'    script "{command}"',
        f"    interval {check_every}",
        f"    timeout {check_every}",
        f"    fall {ALIVE_FALL}",
        f"    rise {ALIVE_RISE}",
        "    weight 0",
        "}",
        "",
        f"vrrp_instance {VRRP_INSTANCE} {{",
        "    state BACKUP",
        f"    interface {ha.interface}",
        f"    virtual_router_id {ha.virtual_router_id}",
        f"    priority {TAKEOVER_PRIORITY if takeover else node.priority}",
        f"    advert_int {advert}",
        *([] if ha.preempt or takeover else ["    nopreempt"]),
        f"    unicast_src_ip {node.address}",
        "    unicast_peer {",
        f"        {peer.address}",
        "    }",
        "    check_unicast_src",
        "    unicast_fault_no_peer",
        f"    garp_master_repeat {GARP_MASTER_REPEAT}",
        f"    garp_master_delay {GARP_MASTER_DELAY}",
        f"    garp_master_refresh {GARP_MASTER_REFRESH}",
        "    virtual_ipaddress {",
        *(f"        {vip} dev {ha.interface}" for vip in ha.vips),
        "    }",
        "    track_script {",
        f"        {ALIVE_SCRIPT}",
        "    }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def argv(files: NodeFiles, keepalived: str = "keepalived") -> list[str]:
    """How medlb starts keepalived: VRRP only (-P), in the foreground as its child (-n),
    logging to stderr for medlb to read (-l), with this node's config and pid files
    (-p/-r), so it is found again from its pid file after medlb restarts."""
    return [keepalived, "-P", "-n", "-l", "-f", str(files.config), "-p", str(files.pid), "-r", str(files.vrrp_pid)]
