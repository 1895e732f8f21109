"""Health checks against real servers on loopback: http, script, tcp and none."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from helpers import LOOPBACK, free_port, free_ports, server, service, wait_until, who_answers

FAST = {"interval": "200ms", "timeout": "150ms", "rise": 2, "fall": 2}

# An HTTP server whose every answer (status line, then body) is read from a file.
HTTP_SERVER = """
import http.server, pathlib, sys

answer = pathlib.Path(sys.argv[1])


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        status, _, body = answer.read_text().partition("\\n")
        data = body.encode()
        self.send_response(int(status))
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[2])), Handler)
print("ready", flush=True)
server.serve_forever()
"""


class HttpServer:
    def __init__(self, folder: Path):
        folder.mkdir()
        self.answer = folder / "answer"
        self.port = free_port()
        self.proc: subprocess.Popen[str] | None = None

    def set(self, status: int, body: str = "") -> None:
        scratch = self.answer.with_suffix(".new")
        scratch.write_text(f"{status}\n{body}")
        os.replace(scratch, self.answer)  # never half a file for a request to read

    def start(self, script: Path, status: int, body: str) -> "HttpServer":
        self.set(status, body)
        self.proc = subprocess.Popen([sys.executable, str(script), str(self.answer), str(self.port)],
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"
        return self


@pytest.fixture
def http_server(tmp_path):
    """Start an HTTP server answering `status` and `body` until told otherwise."""
    script = tmp_path / "http_server.py"
    script.write_text(HTTP_SERVER)
    started: list[HttpServer] = []

    def start(status: int = 200, body: str = "ok") -> HttpServer:
        started.append(HttpServer(tmp_path / f"http{len(started)}").start(script, status, body))
        return started[-1]

    yield start
    for each in started:
        if each.proc is not None:
            each.proc.kill()
            each.proc.wait()


def shell_script(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    return str(path)


def checked(lb, service_name: str, server_name: str) -> dict:
    """The server's view once at least one check has run on it."""
    return wait_until(lambda: (view := lb.server(service_name, server_name))["last_check"] and view, 10,
                      what=f"a check of {service_name}/{server_name}")


def check_count(lb, server_name: str, result: str) -> float:
    text = lb.api("GET", "/metrics").text
    return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
               if s.name == "medlb_health_checks_total"
               and s.labels["server"] == server_name and s.labels["result"] == result)


def test_http_check_marks_a_500_server_down_and_a_200_server_up(medlb, http_server):
    sick, well = http_server(500, "broken"), http_server(200, "fine")
    lb = medlb([service("viewer", free_port(), [server("sick", sick.port), server("well", well.port)],
                        health={"type": "http", "path": "/health", **FAST})])

    lb.wait_health("viewer", "sick", "down", 10)
    assert "500" in lb.server("viewer", "sick")["health_reason"]
    view = checked(lb, "viewer", "well")
    assert (view["health"], view["last_check"]["ok"]) == ("up", True)
    assert "200" in view["health_reason"]

    sick.set(200, "fine again")
    lb.wait_health("viewer", "sick", "up", 10)


def test_http_check_marks_a_server_down_when_the_body_lacks_expect_body(medlb, http_server):
    api = http_server(200, '{"status":"DOWN"}')
    lb = medlb([service("api", free_port(), [server("api1", api.port)],
                        health={"type": "http", "path": "/health", "expect_body": '"status":"UP"', **FAST})])

    lb.wait_health("api", "api1", "down", 10)
    assert "body" in lb.server("api", "api1")["health_reason"]

    api.set(200, '{"status":"UP"}')
    lb.wait_health("api", "api1", "up", 10)


def test_script_check_gets_the_server_in_its_environment_and_its_exit_status_decides(medlb, tmp_path):
    (tmp_path / "exit").write_text("1")
    script = shell_script(tmp_path, "check.sh", """
env | grep '^MEDLB_' | sort > "$1/$MEDLB_SERVER.new" && mv "$1/$MEDLB_SERVER.new" "$1/$MEDLB_SERVER.env"
exit "$(cat "$1/exit")"
""")
    port = free_port()
    lb = medlb([service("ris", free_port(), [server("ris1", port)],
                        health={"type": "script", "command": ["/bin/sh", script, str(tmp_path)],
                                "interval": "200ms", "timeout": "200ms", "rise": 2, "fall": 2})])

    lb.wait_health("ris", "ris1", "down", 10)
    assert "exited 1" in lb.server("ris", "ris1")["health_reason"]
    env = dict(line.split("=", 1) for line in (tmp_path / "ris1.env").read_text().splitlines())
    assert env == {"MEDLB_SERVER": "ris1", "MEDLB_SERVER_HOST": LOOPBACK, "MEDLB_SERVER_PORT": str(port),
                   "MEDLB_SERVICE": "ris"}

    (tmp_path / "exit").write_text("0")
    lb.wait_health("ris", "ris1", "up", 10)


def test_a_script_that_hangs_past_the_timeout_marks_the_server_down(medlb, tmp_path):
    script = shell_script(tmp_path, "hang.sh", "exec sleep 60\n")
    lb = medlb([service("ris", free_port(), [server("ris1", free_port())],
                        health={"type": "script", "command": ["/bin/sh", script], **FAST})])

    lb.wait_health("ris", "ris1", "down", 10)

    reason = lb.server("ris", "ris1")["health_reason"]
    assert re.search(r"0\.15 ?s|150 ?ms", reason), reason


def test_a_timed_out_script_leaves_no_process_behind(medlb, tmp_path):
    script = shell_script(tmp_path, "hang.sh", 'sleep 60 &\necho $! > "$1/child.$$"\nwait\n')
    lb = medlb([service("ris", free_port(), [server("ris1", free_port())],
                        health={"type": "script", "command": ["/bin/sh", script, str(tmp_path)], **FAST})])
    lb.wait_health("ris", "ris1", "down", 10)
    lb.stop()
    children = [int(path.read_text()) for path in tmp_path.glob("child.*") if path.read_text().strip()]
    try:
        assert children
        wait_until(lambda: not any(_alive(pid) for pid in children), 3, what="the scripts' children to end")
    finally:
        for pid in children:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_tcp_check_marks_a_closed_port_down_with_connection_refused(medlb, backends):
    open_port, closed_port = free_ports(2)
    backends.start("A", open_port)
    lb = medlb([service("pacs", free_port(), [server("A", open_port), server("B", closed_port)])])

    lb.wait_health("pacs", "B", "down", 10)

    assert lb.server("pacs", "B")["health_reason"] == "connection refused"
    assert checked(lb, "pacs", "A")["health"] == "up"


def test_a_server_marked_down_gets_no_traffic(medlb, backends):
    vip, a, b = free_ports(3)
    backends.start("A", a)
    backends.start("B", b)  # B accepts connections: only its check says it is down
    lb = medlb([service("pacs", vip, [server("A", a), server("B", b)],
                        health={"type": "script", "command": ["/bin/sh", "-c", '[ "$MEDLB_SERVER" != B ]'],
                                "interval": "200ms", "timeout": "200ms", "rise": 2, "fall": 2})])
    lb.wait_health("pacs", "B", "down", 10)

    answers = Counter(who_answers(vip) for _ in range(20))

    assert answers == {"A": 20}
    assert lb.server("pacs", "B")["total_connections"] == 0


def test_health_type_none_keeps_servers_up(medlb):
    closed = free_port()
    lb = medlb([service("quiet", free_port(), [server("q1", closed)], health={"type": "none"}),
                service("checked", free_port(), [server("c1", closed)])])

    lb.wait_health("checked", "c1", "down", 10)  # checks have run by now

    quiet = lb.server("quiet", "q1")
    assert (quiet["health"], quiet["available"], quiet["last_check"]) == ("up", True, None)
    assert "no health check" in quiet["health_reason"]
    assert check_count(lb, "q1", "ok") + check_count(lb, "q1", "failed") == 0


def test_metrics_count_health_checks_by_result(medlb, backends):
    up_port, closed_port = free_ports(2)
    backends.start("A", up_port)
    lb = medlb([service("pacs", free_port(), [server("A", up_port), server("B", closed_port)])])
    ok_before, failed_before = check_count(lb, "A", "ok"), check_count(lb, "B", "failed")

    wait_until(lambda: check_count(lb, "A", "ok") >= ok_before + 3, 10, what="ok checks of A to grow")
    wait_until(lambda: check_count(lb, "B", "failed") >= failed_before + 3, 10, what="failed checks of B to grow")

    assert check_count(lb, "A", "failed") == 0
    assert check_count(lb, "B", "ok") == 0
