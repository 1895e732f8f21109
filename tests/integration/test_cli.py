"""`medlb check` and `medlb run` as an operator runs them: exit codes and what they print."""

from __future__ import annotations

import json
import resource
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from helpers import LOOPBACK, TOKEN, free_port, free_ports, wait_until

ROOT = Path(__file__).resolve().parents[2]
# plan-*.yaml are sites for `medlb plan`, not configs (tests/unit/test_plan.py).
EXAMPLES = sorted(path for path in (ROOT / "examples").glob("*.yaml") if not path.name.startswith("plan-"))


def medlb(*args: str, cwd: Path | None = None, timeout: float = 30,
          open_files: int | None = None) -> subprocess.CompletedProcess[str]:
    """`open_files`: run with soft and hard RLIMIT_NOFILE at this, as `prlimit` sets it."""
    limit = (lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))) if open_files else None
    return subprocess.run([sys.executable, "-m", "medlb", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, preexec_fn=limit)


def write(tmp_path: Path, text: str, name: str = "medlb.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def one_service(port: int, mode: str = "tcp", state_dir: Path | str = "./state") -> str:
    return f"""
        state_dir: {state_dir}
        services:
          - name: pacs
            mode: {mode}
            listen: {LOOPBACK}:{port}
            servers:
              - name: pacs1
                address: {LOOPBACK}:{free_port()}
        """


def test_check_a_valid_file_exits_0_and_names_each_service(tmp_path):
    vip1, vip2, a, b = free_ports(4)
    path = write(tmp_path, f"""
        services:
          - name: pacs
            listen: {LOOPBACK}:{vip1}
            servers:
              - {{name: pacs1, address: "{LOOPBACK}:{a}"}}
          - name: hl7-orders
            listen: {LOOPBACK}:{vip2}
            scheduler: leastconn
            servers:
              - {{name: engine1, address: "{LOOPBACK}:{b}"}}
        """)

    result = medlb("check", str(path))

    assert result.returncode == 0, result.stderr
    assert "valid, 2 service(s)" in result.stdout
    assert "pacs [tcp]" in result.stdout
    assert "hl7-orders [tcp]" in result.stdout
    assert "engine1=" in result.stdout


def test_check_reports_every_problem_with_its_path_and_line(tmp_path):
    path = write(tmp_path, """
        services:
          - name: pacs
            listen: 127.0.0.1:11104
            helth:
              type: tcp
            health:
              type: tcp
              interval: 5 parsecs
            servers:
              - name: a
                address: 127.0.0.1:1
              - name: b
                address: "127.0.0.1:99999"
        """)

    result = medlb("check", str(path))

    assert result.returncode == 2
    output = result.stdout + result.stderr
    assert "3 problem(s)" in output
    assert "services[0] (pacs).helth (line 4): unknown key" in output
    assert "services[0] (pacs).health.interval (line 8): expected a duration" in output
    assert "services[0] (pacs).servers[1] (b).address (line 13): port 99999 is outside 1-65535" in output


def test_check_reports_a_listen_address_used_by_two_services(tmp_path):
    path = write(tmp_path, """
        services:
          - name: pacs
            listen: 127.0.0.1:11104
            servers:
              - {name: a, address: "127.0.0.1:1"}
          - name: ris
            listen:
              - 127.0.0.1:11105
              - 127.0.0.1:11104
            servers:
              - {name: a, address: "127.0.0.1:2"}
        """)

    result = medlb("check", str(path))

    assert result.returncode == 2
    output = result.stdout + result.stderr
    assert "services[1] (ris).listen[1] (line 9): 127.0.0.1:11104 is already a listen address of services[0] (pacs)" in output


def test_check_and_run_take_the_file_with_or_without_c(tmp_path):
    good = write(tmp_path, one_service(free_port()))
    bad = write(tmp_path, one_service(free_port()).replace("listen:", "listn:"), name="bad.yaml")

    checked = [medlb("check", str(good)), medlb("check", "-c", str(good)), medlb("check", "--config", str(good))]
    runs = [medlb("run", str(bad), cwd=tmp_path), medlb("run", "-c", str(bad), cwd=tmp_path)]
    neither, both = medlb("check"), medlb("run", str(good), "-c", str(bad))

    assert [result.returncode for result in checked] == [0, 0, 0], [result.stderr for result in checked]
    assert all("valid, 1 service(s)" in result.stdout for result in checked)
    assert [result.returncode for result in runs] == [2, 2]
    assert all("services[0] (pacs).listn (line 5): unknown key" in result.stderr for result in runs)
    assert neither.returncode == 2 and "which config file? medlb check FILE (or -c FILE)" in neither.stderr
    assert both.returncode == 2 and "give the config file once" in both.stderr


def test_check_reports_a_server_that_loops_into_medlb_and_a_missing_certificate_in_one_pass(tmp_path):
    port = free_port()
    path = write(tmp_path, f"""
        services:
          - name: pacs
            listen: 0.0.0.0:{port}
            tls: {{cert: pacs.pem, key: pacs.key}}
            servers:
              - {{name: self, address: "127.0.0.1:{port}"}}
              - {{name: p2, address: "127.0.0.1:1", weight: -1}}
        """)

    result = medlb("check", str(path))

    assert result.returncode == 2
    assert result.stderr.splitlines()[1:] == [
        f"  services[0] (pacs).tls.cert (line 4): cannot read {tmp_path / 'pacs.pem'}: No such file or directory",
        f"  services[0] (pacs).tls.key (line 4): cannot read {tmp_path / 'pacs.key'}: No such file or directory",
        f"  services[0] (pacs).servers[0] (self).address (line 6): 127.0.0.1:{port} is medlb's own listen address "
        "(services[0] (pacs).listen[0]); every connection would loop back into medlb and open another until it "
        "runs out of descriptors",
        "  services[0] (pacs).servers[1] (p2).weight (line 7): a weight is 0 (no new work) to 1000, not -1",
    ]


def test_check_advises_when_max_connections_exceed_the_open_file_limit_and_exits_0(tmp_path):
    vip, a = free_ports(2)
    path = write(tmp_path, f"""
        workers: 1
        services:
          - name: pacs
            listen: {LOOPBACK}:{vip}
            limits: {{max_connections: 200}}
            servers:
              - {{name: pacs1, address: "{LOOPBACK}:{a}"}}
        """)

    # 256 descriptors hold (256 - 128 reserved - 1 listen socket - 2 for the check) / 2 = 62 connections.
    tight = medlb("check", str(path), open_files=256)
    roomy = medlb("check", str(path), open_files=4096)

    assert tight.returncode == 0, tight.stderr
    assert "valid, 1 service(s)" in tight.stdout
    assert "advisories (medlb runs with these):" in tight.stdout
    assert "services (line 2): max_connections adds up to 200 over all services, but the open-file limit " \
           "here (256, the hard limit medlb run raises to) holds 62 connections in one process" in tight.stdout
    assert roomy.returncode == 0, roomy.stderr
    assert "advisories" not in roomy.stdout and "max_connections" not in roomy.stdout


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_example_passes_check(example):
    """The examples describe other hosts (examples/l4.yaml names an interface lb0), so
    the file alone is checked."""
    result = medlb("check", "--no-host", str(example))

    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout


def test_run_refuses_a_part_that_is_not_yet_available(tmp_path):
    path = write(tmp_path, one_service(free_port(), mode="mllp").rstrip(" ") + "            tls: {cert: a.pem, key: a.key}\n")

    result = medlb("run", "-c", str(path), cwd=tmp_path)

    assert result.returncode == 2
    assert "services[0] (pacs).tls (line 9)" in result.stderr and "TLS is not yet available in mode mllp" in result.stderr


def test_run_exits_1_naming_a_listen_address_already_taken(tmp_path):
    with socket.socket() as taken:
        taken.bind((LOOPBACK, 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = write(tmp_path, one_service(port))

        result = medlb("run", "-c", str(path), cwd=tmp_path)

    assert result.returncode == 1
    assert f"{LOOPBACK}:{port}" in result.stderr
    assert "in use" in result.stderr


def test_run_exits_1_naming_an_admin_address_already_taken(tmp_path):
    with socket.socket() as taken:
        taken.bind((LOOPBACK, 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = write(tmp_path, f"admin: {{listen: '{LOOPBACK}:{port}', token: {TOKEN}}}\n" + textwrap.dedent(
            one_service(free_port())))

        result = medlb("run", "-c", str(path), cwd=tmp_path)

    assert result.returncode == 1
    assert f"admin API cannot listen on {LOOPBACK}:{port}" in result.stderr


def test_run_exits_2_on_an_invalid_config(tmp_path):
    path = write(tmp_path, one_service(free_port()).replace("listen:", "listn:"))

    result = medlb("run", "-c", str(path), cwd=tmp_path)

    assert result.returncode == 2
    assert "services[0] (pacs).listn (line 5)" in result.stderr


def start_json_logging(tmp_path: Path) -> tuple[subprocess.Popen[bytes], Path, int]:
    """medlb run --log-format json with a server that is down (so it logs warnings
    too), once it has logged a health change."""
    proc, log, admin = run_json_logging(tmp_path)
    wait_until(lambda: proc.poll() is not None or "health_changed" in log.read_text(), 15,
               what="medlb to log a health change")
    assert proc.poll() is None, log.read_text()
    return proc, log, admin


def run_json_logging(tmp_path: Path) -> tuple[subprocess.Popen[bytes], Path, int]:
    """medlb run --log-format json with a server that is down, just started."""
    vip, admin, closed = free_ports(3)
    path = write(tmp_path, f"""
        admin: {{listen: "{LOOPBACK}:{admin}", token: {TOKEN}, tls: "off"}}
        state_dir: ./state
        services:
          - name: pacs
            listen: {LOOPBACK}:{vip}
            health: {{type: tcp, interval: 200ms, timeout: 150ms, rise: 1, fall: 1}}
            servers:
              - {{name: pacs1, address: "{LOOPBACK}:{closed}"}}
        """)
    log = tmp_path / "medlb.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "medlb", "run", "-c", str(path), "--log-format", "json"],
                                stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path)
    return proc, log, admin


def json_lines(proc: subprocess.Popen[bytes], log: Path) -> list[dict]:
    proc.terminate()
    assert proc.wait(20) == 0
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"not a JSON line: {line!r}") from None
    return records


def test_run_with_json_log_format_writes_one_json_object_per_line(tmp_path):
    proc, log, _ = start_json_logging(tmp_path)
    try:
        records = json_lines(proc, log)
    finally:
        proc.kill()

    assert all("event" in record for record in records)
    events = [record["event"] for record in records]
    assert events.index("listening") < events.index("started") and events[-1] == "stopped"
    assert any(r["event"] == "health_changed" and r["level"] == "warning" for r in records)


def test_sigterm_as_soon_as_medlb_logs_its_first_line_is_a_clean_stop(tmp_path):
    """A SIGTERM that came while medlb was still starting (its checks already running,
    the admin API not yet listening) killed it by the default action, exit -15, without
    "stopped": a supervisor stopping a node that had just started saw a crash. The
    stop is honoured from the first line medlb logs; it stops once started."""
    proc, log, _ = run_json_logging(tmp_path)
    try:
        wait_until(lambda: proc.poll() is not None or log.stat().st_size > 0, 15, interval=0.001,
                   what="medlb to log its first line")
        proc.terminate()
        assert proc.wait(20) == 0, log.read_text()
    finally:
        proc.kill()
    events = [json.loads(line)["event"] for line in log.read_text().splitlines() if line.strip()]
    assert events[-1] == "stopped", events


def test_json_log_stays_json_after_a_malformed_request_to_the_admin_port(tmp_path):
    proc, log, admin = start_json_logging(tmp_path)
    try:
        with socket.create_connection((LOOPBACK, admin), timeout=5) as sock:
            sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
            assert sock.recv(100).startswith(b"HTTP/1.1 400")
        records = json_lines(proc, log)
    finally:
        proc.kill()

    assert all("event" in record for record in records)


def test_hl7_send_gives_every_message_its_own_control_id_across_runs_in_one_second(backends, tmp_path,
                                                                                 monkeypatch, capsys):
    """Two runs in the same second sent the same MSH-10 (MEDLBTEST<second>0): an engine
    that drops duplicates would drop the second run's message as already seen."""
    import argparse

    from medlb import hl7send

    port, log = free_port(), tmp_path / "engine.jsonl"
    backends.start_mllp("E1", port, log)
    monkeypatch.setattr(hl7send.time, "time", lambda: 1764500000.0)  # both runs within one second
    for _ in range(2):
        assert hl7send.run(argparse.Namespace(address=f"{LOOPBACK}:{port}", count=2, patient="TEST0001",
                                              timeout=10.0, production=False)) == 0
    ids = [json.loads(line)["id"] for line in log.read_text().splitlines()]
    assert len(ids) == 4 and len(set(ids)) == 4, ids
    assert all(len(control_id) <= 20 for control_id in ids)  # MSH-10 is 20 characters in HL7 2.5
    assert capsys.readouterr().out.count("|AA|") == 4


def test_check_refuses_a_server_at_this_hosts_own_address_behind_a_wildcard_listen(tmp_path):
    from medlb.kernel.host import local_addresses

    own = sorted(address for address in local_addresses() if not address.startswith("127."))
    if not own:
        pytest.skip("this host has no IPv4 address besides loopback")
    port = free_port()
    path = write(tmp_path, f"""
        services:
          - name: ris
            listen: 0.0.0.0:{port}
            servers: [{{name: r1, address: "{own[0]}:{port}"}}]
        """)

    on_this_host, file_alone = medlb("check", str(path)), medlb("check", "--no-host", str(path))

    assert on_this_host.returncode == 2
    assert f"services[0] (ris).servers[0] (r1).address (line 4): {own[0]}:{port} is medlb's own listen address" \
        in on_this_host.stderr
    assert file_alone.returncode == 0, file_alone.stderr
