"""The README's first command: `make demo` serves traffic and stops on Ctrl-C."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pynetdicom import AE
from pynetdicom.sop_class import Verification

from conftest import need_tool
from helpers import connect, free_port, free_ports, wait_until

ROOT = Path(__file__).resolve().parents[2]


def test_make_demo_balances_and_stops_cleanly_on_ctrl_c():
    base, admin = demo_ports(), free_port()
    proc = subprocess.Popen(["make", "--no-print-directory", "demo",
                             f"DEMO_ARGS=--base-port {base} --admin-port {admin}"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "/failback" in line:  # the banner's last line
                break
        output = "".join(lines)
        assert "medlb demo is running" in output, output
        # leastconn with weights 2:1: of three held connections, vna1 takes two.
        held = [connect(base) for _ in range(2)] + [connect(base + 1)]
        assert sorted(name for _, name in held) == ["vna1 ready", "vna1 ready", "vna2 ready"]
        for sock, _ in held:
            sock.close()
        # The one-line HL7 command the banner prints.
        sent = subprocess.run([str(ROOT / ".venv/bin/medlb"), "hl7-send", f"127.0.0.1:{base + 20}", "--count", "2"],
                              capture_output=True, text=True, timeout=60)
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert sent.stdout.count("MSA|AA|") == 2
        # The web page the banner names answers over HTTPS (self-signed).
        import httpx

        page = httpx.get(f"https://127.0.0.1:{admin}/", verify=False, timeout=10)
        assert page.status_code == 200 and "/static/app.js" in page.text
        # The simulated PACS answer only to PACS1/PACS2: an echo to MEDLB works only
        # because medlb rewrites the called AE; an unknown calling AE is rejected.
        assert f"echoscu -v -aet CT1 -aec MEDLB 127.0.0.1 {base + 30}" in output
        assert wait_until(lambda: dicom_echo(base + 30, "CT1") == "ok", 20, what="a C-ECHO through the demo")
        assert dicom_echo(base + 30, "XR1") == "rejected"
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
    # Ctrl-C reaches make too, which then reports the interrupt; medlb itself must stop
    # cleanly, without a traceback.
    assert proc.returncode in (0, -signal.SIGINT, 2), rest
    assert "medlb demo stopped" in rest and "Traceback" not in rest, rest
    assert f"https://127.0.0.1:{admin}/api/v1/services" in "".join(lines)
    assert f"web page:   https://127.0.0.1:{admin}/      user: demo  password: " in "".join(lines)
    assert f"hl7-send 127.0.0.1:{base + 20}" in "".join(lines)


def demo_ports() -> int:
    base = free_ports(1)[0]
    while not all(free_port_ok(base + offset) for offset in (0, 1, 10, 20, 30, 40, 100, 101, 102, 110, 111, 120,
                                                             121, 130, 131, 140, 141)):
        base = free_ports(1)[0]
    return base


def printed(lines: list[str], marker: str) -> str:
    """The banner's command line that contains `marker`, as an operator would paste it."""
    return next(line.strip() for line in lines if marker in line)


@pytest.mark.parametrize("activated", [True, False], ids=["venv-activated", "venv-not-on-path"])
def test_the_demo_prints_commands_that_work_as_printed(tmp_path, activated):
    """Pasted into a shell elsewhere, with the virtual environment activated (whose
    pynetdicom installs an echoscu and a storescu of its own) or not on PATH at all."""
    need_tool("echoscu")
    venv_bin = str(Path(sys.executable).parent)
    system_path = os.pathsep.join(d for d in os.environ["PATH"].split(os.pathsep) if d != venv_bin)
    env = {**os.environ, "PATH": os.pathsep.join([venv_bin, system_path]) if activated else system_path}
    base, admin = demo_ports(), free_port()
    proc = subprocess.Popen([sys.executable, "-m", "medlb", "demo", "--base-port", str(base), "--admin-port",
                             str(admin)], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "/failback" in line:
                break
        assert "medlb demo is running" in "".join(lines), "".join(lines)
        assert wait_until(lambda: dicom_echo(base + 30, "CT1") == "ok", 20, what="the demo's PACS up")

        def run(command: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(["bash", "-c", command], cwd=tmp_path.parent, env=env, capture_output=True,
                                  text=True, timeout=60)

        echo = printed(lines, "-aet CT1 -aec MEDLB")
        store = printed(lines, "storescu")
        assert shlex.split(echo)[0] == "/usr/bin/echoscu", "dcmtk's, never the venv's that shadows it"
        assert shlex.split(store)[0] == "/usr/bin/storescu"
        echoed = run(echo)
        assert echoed.returncode == 0 and "Received Echo Response (Success)" in echoed.stdout + echoed.stderr, echoed
        stored = run(store)
        assert stored.returncode == 0 and "Received Store Response (Success)" in stored.stdout + stored.stderr, stored
        rejected = run(printed(lines, "-aet XR1"))
        assert "Association Rejected" in rejected.stdout + rejected.stderr, rejected
        sent = run(printed(lines, "hl7-send"))
        assert sent.returncode == 0 and sent.stdout.count("MSA|AA|") == 3, sent
        status = run(printed(lines, "ctl status").split(":", 1)[1])
        assert status.returncode == 0 and "pacs" in status.stdout, status
        # The portal: HTTPS (self-signed, hence -k) answered by a simulated server
        # behind medlb's TLS offload, and the API shows the service with both servers up.
        portal = printed(lines, "curl -k https://")
        assert portal.startswith(f"curl -k https://127.0.0.1:{base + 40}/ ")
        assert wait_until(lambda: "served by portal" in run(portal).stdout, 20, what="an HTTPS answer from the portal")
        api = printed(lines, "/api/v1/services/portal")
        assert wait_until(lambda: servers_up(run(api).stdout) == (2, 2), 20, what="the portal's servers up")
        assert shlex.split(printed(lines, "hl7-send"))[0] == ("medlb" if activated else str(Path(venv_bin) / "medlb"))
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.communicate(timeout=30)


def servers_up(answer: str) -> tuple[int, int] | None:
    """(servers up, servers in all) of the service the API answered with; None for no answer."""
    try:
        service = json.loads(answer)
    except ValueError:
        return None
    return service["servers_up"], service["servers_total"]


def dicom_echo(port: int, calling: str) -> str:
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="MEDLB")
    if assoc.is_rejected:
        return "rejected"
    if not assoc.is_established:
        return "failed"
    status = assoc.send_c_echo()
    assoc.release()
    return "ok" if status and status.Status == 0 else "failed"


def free_port_ok(port: int) -> bool:
    import socket

    if port > 65535:
        return False
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
