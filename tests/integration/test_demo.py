"""The README's first command: `make demo` serves traffic and stops on Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from pynetdicom import AE
from pynetdicom.sop_class import Verification

from helpers import connect, free_port, free_ports, wait_until

ROOT = Path(__file__).resolve().parents[2]


def test_make_demo_balances_and_stops_cleanly_on_ctrl_c():
    base = free_ports(1)[0]
    while not all(free_port_ok(p) for p in (base, base + 1, base + 10, base + 20, base + 30, base + 100, base + 101,
                                             base + 102, base + 110, base + 111, base + 120, base + 121, base + 130,
                                             base + 131)):
        base = free_ports(1)[0]
    admin = free_port()
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
