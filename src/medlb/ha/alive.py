"""`medlb ha-alive --state-dir STATE`: keepalived's track script for this node.

keepalived runs it every second or so and gives the VIPs up when it fails twice in a
row, so it must answer the one question that matters (can this node's medlb serve
the VIPs?) quickly and without false alarms. It connects to the Unix socket the
control process listens on, `STATE/ha/alive.sock`, and reads one line: `alive`, or
`dead: why`. Exit 0 only for `alive`.

Why a socket the control process answers, and not a pid or a heartbeat file: a
connection refused (medlb killed with -9 leaves the file but no listener), a missing
file, or no answer within the timeout (a hung event loop) all fail, and only the
running event loop can say `alive` after looking at its data plane. No clocks are
compared.

This module imports nothing heavy (no pydantic, no asyncio): `python -m medlb ha-alive`
is dispatched here before the rest of medlb loads, so a check takes tens of
milliseconds on a loaded host rather than most of keepalived's timeout.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import Sequence

#: The socket's name under `STATE/ha/`.
SOCKET_NAME = "alive.sock"
#: How long the check waits for an answer; keepalived's own timeout is a second or more.
ANSWER_TIMEOUT = 0.8
ALIVE = "alive"


def socket_path(state_dir: Path) -> Path:
    return state_dir / "ha" / SOCKET_NAME


def ask(path: Path, timeout: float = ANSWER_TIMEOUT) -> tuple[bool, str]:
    """(alive, what the control process said or why it could not be asked)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            answer = b""
            while not answer.endswith(b"\n") and len(answer) < 4096:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                answer += chunk
    except OSError as exc:
        return False, f"cannot ask medlb at {path}: {exc.strerror or exc}"
    text = answer.decode("utf-8", "replace").strip()
    return text == ALIVE, text or "medlb closed the connection without an answer"


def main(argv: Sequence[str]) -> int:
    """`ha-alive --state-dir STATE`; prints the answer (keepalived logs nothing of it)."""
    import argparse

    parser = argparse.ArgumentParser(prog="medlb ha-alive",
                                     description="exit 0 when this node's medlb says its data plane is alive")
    parser.add_argument("--state-dir", required=True, help="the node's state directory")
    args = parser.parse_args(argv)
    ok, text = ask(socket_path(Path(args.state_dir)))
    print(text, file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1
