"""The dicom mode as DICOM clients see it: dcmtk and pynetdicom through a real medlb
to real SCPs (pynetdicom, dcmtk storescp, Orthanc) on loopback."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pynetdicom import AE, evt
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.sop_class import Verification

from conftest import need_tool
from dicom_helpers import DicomPeers, dicom_service, echoscu, orthanc_binary, output, sample_files, sop_uid, storescu
from helpers import LOOPBACK, free_port, process_tree, server, service, wait_until
from medlb.protocols import dicom as pdu


@pytest.fixture
def peers(tmp_path):
    group = DicomPeers(tmp_path)
    yield group
    group.stop_all()


def need_orthanc() -> None:
    if orthanc_binary() is None:
        need_tool("Orthanc")  # skips on a laptop, fails in CI


@pytest.fixture(autouse=True)
def dcmtk():
    need_tool("echoscu")
    need_tool("storescu")
    need_tool("storescp")


def checked_up(lb, service_name: str, name: str) -> dict:
    """The server's view once a check has run and found it up (servers start up, unchecked)."""
    return wait_until(lambda: (view := lb.server(service_name, name))["last_check"] and view["health"] == "up"
                      and view, 15, what=f"{service_name}/{name} to be checked and up")


def wait_all_up(lb, service_name: str, names: list[str]) -> None:
    for name in names:
        checked_up(lb, service_name, name)


def wait_workers_route_by_it(lb, service_name: str, server_name: str) -> None:
    """The API shows the control process's view; with workers, an action's answer comes
    once every worker routes by it (settle), so a state set to what it is already is a
    barrier: no worker still routes by a health the checks have since changed."""
    answer = lb.set_state(service_name, server_name, "online")
    assert answer.status_code == 200 and answer.json()["settled"], answer.text


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {tuple(sorted(s.labels.items())): s.value for family in text_string_to_metric_families(text)
            for s in family.samples if s.name == name}


def recv_all(sock: socket.socket) -> bytes:
    data = b""
    while piece := sock.recv(65536):
        data += piece
    return data


def associate_recording(port: int) -> tuple[object, list[object]]:
    """A pynetdicom association through medlb that records the PDUs it receives."""
    received: list[object] = []
    ae = AE(ae_title="WS1")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60  # medlb, not a timer, must end it
    assoc = ae.associate(LOOPBACK, port, ae_title="MEDLB",
                         evt_handlers=[(evt.EVT_PDU_RECV, lambda event: received.append(event.pdu))])
    assert assoc.is_established
    return assoc, received


# --- storing through medlb --------------------------------------------------------------


def test_storescu_files_reach_real_scps_through_medlb_spread_by_the_scheduler(medlb, peers):
    """One association per file; weights 2:1:1 under roundrobin give exactly 4:2:2."""
    need_orthanc()
    pacs1 = peers.scp("pacs1", "PACS1")                # answers only to PACS1
    dcm = peers.storescp("dcm", "STORESCP")
    orthanc = peers.orthanc("ORTHANC_A")               # DicomCheckCalledAet: true
    vip = free_port()
    lb = medlb([dicom_service("pacs", vip, [
        server("pacs1", pacs1, ae_title="PACS1", weight=2),
        server("dcm", dcm, ae_title="STORESCP"),
        server("orthanc", orthanc.dicom_port, ae_title="ORTHANC_A"),
    ], scheduler="roundrobin")])
    wait_all_up(lb, "pacs", ["pacs1", "dcm", "orthanc"])
    wait_workers_route_by_it(lb, "pacs", "pacs1")
    files = sample_files()

    for path in files:
        result = storescu(vip, [path])
        assert result.returncode == 0, output(result)

    sent = {sop_uid(path) for path in files}
    arrived = {"pacs1": peers.stored("pacs1"), "dcm": peers.stored("dcm"), "orthanc": orthanc.sop_uids()}
    assert set().union(*arrived.values()) == sent
    assert sum(len(uids) for uids in arrived.values()) == len(sent)  # each file once
    assert {name: len(uids) for name, uids in arrived.items()} == {"pacs1": 4, "dcm": 2, "orthanc": 2}, \
        lb.service("pacs")["servers"]  # with connect_failures, if a retry moved one
    view = lb.service("pacs")
    assert {s["name"]: s["total_connections"] for s in view["servers"]} == {"pacs1": 4, "dcm": 2, "orthanc": 2}
    assert view["dicom"]["by_calling_ae"]["CT1"] == {"active": 0, "total": len(files)}
    assert view["dicom"]["by_called_ae"]["MEDLB"]["total"] == len(files)


def test_one_association_carries_many_files_under_leastconn(medlb, peers):
    pacs1, pacs2 = peers.scp("pacs1", "PACS1"), peers.scp("pacs2", "PACS2")
    vip = free_port()
    lb = medlb([dicom_service("pacs", vip, [server("pacs1", pacs1, ae_title="PACS1"),
                                             server("pacs2", pacs2, ae_title="PACS2")], scheduler="leastconn")])
    wait_all_up(lb, "pacs", ["pacs1", "pacs2"])
    files = sample_files()

    first, second = storescu(vip, files), storescu(vip, files[:3])

    assert first.returncode == 0 and second.returncode == 0, output(first) + output(second)
    stored = [peers.stored("pacs1"), peers.stored("pacs2")]
    assert sorted(len(uids) for uids in stored) == [3, len(files)]  # leastconn ties go in turn
    assert set().union(*stored) == {sop_uid(path) for path in files}


# --- routing and rejects ------------------------------------------------------------------


def test_echoscu_is_routed_by_called_ae_with_the_called_ae_rewritten(medlb, peers):
    pacs1, vna1 = peers.scp("pacs1", "PACS1"), peers.scp("vna1", "VNA1")
    vip = free_port()
    lb = medlb([dicom_service("pacs", vip, [server("pacs1", pacs1, ae_title="PACS1")],
                              dicom={"routes": [{"called_ae": "ARCHIVE", "pool": "archive"}]},
                              pools={"archive": {"servers": [server("vna1", vna1, ae_title="VNA1")]}})])
    wait_all_up(lb, "pacs", ["pacs1", "vna1"])

    to_archive = echoscu(vip, "WS1", "ARCHIVE")
    to_default = echoscu(vip, "WS1", "MEDLB")

    assert to_archive.returncode == 0, output(to_archive)
    assert to_default.returncode == 0, output(to_default)
    totals = {s["name"]: (s["pool"], s["total_connections"]) for s in lb.service("pacs")["servers"]}
    assert totals == {"pacs1": ("default", 1), "vna1": ("archive", 1)}
    assert lb.service("pacs")["pools"]["archive"]["servers"] == ["vna1"]


def test_an_unknown_calling_ae_is_rejected_1_1_3_and_an_unrouted_called_ae_1_1_7(medlb, peers):
    pacs1 = peers.scp("pacs1", "PACS1")
    vip = free_port()
    lb = medlb([dicom_service("pacs", vip, [server("pacs1", pacs1, ae_title="PACS1")],
                              dicom={"allowed_calling_aes": ["CT*", "WS?"], "unrouted": "reject",
                                     "routes": [{"called_ae": "MEDLB", "pool": "default"}]})])
    wait_all_up(lb, "pacs", ["pacs1"])

    stranger = echoscu(vip, "US1", "MEDLB")
    unrouted = echoscu(vip, "CT1", "NOSUCHAE")
    allowed = echoscu(vip, "WS7", "MEDLB")

    assert stranger.returncode != 0
    assert "Rejected Permanent" in output(stranger) and "Calling AE Title Not Recognized" in output(stranger)
    assert unrouted.returncode != 0
    assert "Rejected Permanent" in output(unrouted) and "Called AE Title Not Recognized" in output(unrouted)
    assert allowed.returncode == 0, output(allowed)
    rejects = lb.service("pacs")["dicom"]["rejects"]
    assert (rejects["calling-ae-not-allowed"], rejects["called-ae-not-routed"]) == (1, 1)
    assert lb.server("pacs", "pacs1")["total_connections"] == 1  # rejects never reached it
    # The last rejected associations, newest first: when, AE titles and reason, no data.
    last = lb.service("pacs")["dicom"]["last_rejects"]
    assert [{k: v for k, v in r.items() if k != "at"} for r in last] == [
        {"calling_ae": "CT1", "called_ae": "NOSUCHAE", "reason": "called-ae-not-routed"},
        {"calling_ae": "US1", "called_ae": "MEDLB", "reason": "calling-ae-not-allowed"}]
    assert last[0]["at"] >= last[1]["at"] > 0
    log = lb.log()
    assert "reason=calling-ae-not-allowed" in log and "calling_ae=US1" in log


def test_rejected_transient_when_every_server_is_halted_or_down(medlb, peers):
    pacs1, pacs2 = peers.scp("pacs1", "PACS1"), peers.scp("pacs2", "PACS2")
    vip = free_port()
    lb = medlb([dicom_service("pacs", vip, [server("pacs1", pacs1, ae_title="PACS1"),
                                             server("pacs2", pacs2, ae_title="PACS2")])])
    wait_all_up(lb, "pacs", ["pacs1", "pacs2"])
    for name in ("pacs1", "pacs2"):
        assert lb.set_state("pacs", name, "halt").status_code == 200

    halted = echoscu(vip)

    assert halted.returncode != 0
    assert "Rejected Transient" in output(halted) and "Temporary Congestion" in output(halted)
    lb.set_state("pacs", "pacs1", "online")
    assert echoscu(vip).returncode == 0
    lb.set_state("pacs", "pacs2", "online")

    peers.kill("pacs1")
    peers.kill("pacs2")
    lb.wait_health("pacs", "pacs1", "down", 15)
    lb.wait_health("pacs", "pacs2", "down", 15)
    down = echoscu(vip)

    assert down.returncode != 0 and "Rejected Transient" in output(down)
    assert lb.service("pacs")["dicom"]["rejects"]["no-server"] == 2


def test_a_transient_reject_or_dead_server_moves_on_invisibly(medlb, peers):
    busy = peers.scp("busy", "BUSY", reject="transient")
    pacs1 = peers.scp("pacs1", "PACS1")
    dead = free_port()  # nothing listens here
    vip = free_port()
    lb = medlb([dicom_service("pacs", vip, [server("busy", busy, ae_title="BUSY"),
                                             server("dead", dead, ae_title="DEAD"),
                                             server("pacs1", pacs1, ae_title="PACS1")],
                              health={"type": "none"})])

    results = [echoscu(vip) for _ in range(4)]

    assert all(r.returncode == 0 for r in results), [output(r) for r in results]
    view = {s["name"]: s for s in lb.service("pacs")["servers"]}
    assert view["pacs1"]["total_connections"] == 4
    assert view["busy"]["connect_failures"] >= 1 and view["dead"]["connect_failures"] >= 1
    assert view["busy"]["total_connections"] == 0 and view["busy"]["active_connections"] == 0


def test_a_permanent_reject_from_the_server_reaches_the_client_as_sent(medlb, peers):
    picky = peers.scp("picky", "PICKY", reject="permanent")
    vip = free_port()
    lb = medlb([dicom_service("pacs", vip, [server("picky", picky, ae_title="PICKY")], health={"type": "none"})])

    result = echoscu(vip)

    assert result.returncode != 0 and "Calling AE Title Not Recognized" in output(result)
    assert lb.service("pacs")["dicom"]["rejects"]["server-rejected"] == 1
    assert lb.server("pacs", "picky")["active_connections"] == 0


def test_max_connections_answers_local_limit_exceeded(medlb, peers):
    pacs1 = peers.scp("pacs1", "PACS1")
    vip = free_port()
    lb = medlb([dicom_service("pacs", vip, [server("pacs1", pacs1, ae_title="PACS1")],
                              limits={"max_connections": 1})])
    wait_all_up(lb, "pacs", ["pacs1"])
    ae = AE(ae_title="WS1")
    ae.add_requested_context(Verification)
    held = ae.associate(LOOPBACK, vip, ae_title="MEDLB")
    assert held.is_established
    try:
        refused = echoscu(vip)
    finally:
        held.release()

    assert refused.returncode != 0
    assert "Rejected Transient" in output(refused) and "Local Limit Exceeded" in output(refused)
    assert lb.service("pacs")["refused_connections"] == 1
    assert lb.service("pacs")["dicom"]["rejects"]["max-connections"] == 1
    wait_until(lambda: lb.service("pacs")["active_connections"] == 0, 10, what="the held association to end")
    assert echoscu(vip).returncode == 0


# --- ends of an association ----------------------------------------------------------------


def test_a_server_killed_mid_association_gives_the_client_an_abort_within_seconds(medlb, peers):
    pacs1 = peers.scp("pacs1", "PACS1")
    vip = free_port()
    lb = medlb([dicom_service("pacs", vip, [server("pacs1", pacs1, ae_title="PACS1")],
                              health={"type": "none"})])
    assoc, received = associate_recording(vip)
    assert assoc.send_c_echo().Status == 0x0000

    peers.kill("pacs1")

    wait_until(lambda: assoc.is_aborted, 10, what="the client's association to be aborted")
    assert any(isinstance(item, A_ABORT_RQ) for item in received), "medlb sends an A-ABORT, not a bare close"
    view = lb.service("pacs")
    assert view["dicom"]["aborts"]["server-gone"] == 1
    wait_until(lambda: lb.service("pacs")["dicom"]["active_associations"] == 0, 5, what="the association to end")
    assert "association_aborted" in lb.log() and "why=" in lb.log()


def test_a_client_that_vanishes_mid_association_frees_its_server(medlb, peers):
    pacs1 = peers.scp("pacs1", "PACS1")
    vip = free_port()
    lb = medlb([dicom_service("pacs", vip, [server("pacs1", pacs1, ae_title="PACS1")], health={"type": "none"})])
    ae = AE(ae_title="WS1")
    ae.add_requested_context(Verification)
    assoc = ae.associate(LOOPBACK, vip, ae_title="MEDLB")
    assert assoc.is_established
    wait_until(lambda: lb.server("pacs", "pacs1")["active_connections"] == 1, 5, what="the association")

    assoc.dul.socket.socket.close()  # gone without a release or an abort of its own
    assoc.kill()

    wait_until(lambda: lb.server("pacs", "pacs1")["active_connections"] == 0, 10, what="the server side to close")
    assert lb.service("pacs")["dicom"]["aborts"]["client-gone"] == 1


def test_bad_first_pdus_and_silence_are_closed_cleanly_and_counted(medlb, peers):
    pacs1 = peers.scp("pacs1", "PACS1")
    vip = free_port()
    lb = medlb([dicom_service("pacs", vip, [server("pacs1", pacs1, ae_title="PACS1")],
                              limits={"associate_timeout": "500ms", "max_associate_size": "4KiB"})])
    wait_all_up(lb, "pacs", ["pacs1"])

    def exchange(data: bytes) -> bytes:
        with socket.create_connection((LOOPBACK, vip), timeout=10) as sock:
            if data:
                sock.sendall(data)
            return recv_all(sock)

    # Not DICOM at all, then a P-DATA-TF before any association: A-ABORT, then a close.
    assert exchange(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") == pdu.a_abort(2, pdu.ABORT_UNRECOGNISED_PDU)
    assert exchange(bytes.fromhex("04000000000600000002ff00")) == pdu.a_abort(2, pdu.ABORT_UNEXPECTED_PDU)
    # An A-ASSOCIATE-RQ declaring 1 MiB, far above max_associate_size: refused from its header.
    assert exchange(b"\x01\x00" + (1 << 20).to_bytes(4, "big") + b"\x00" * 1000) == pdu.a_abort(2, 0)
    # A well-framed RQ whose items run past its end.
    broken = bytearray(bytes.fromhex("0100000000500001") + b"\x00" * 74)
    broken[74 + 2:74 + 4] = (500).to_bytes(2, "big")
    broken[2:6] = (len(broken) - 6).to_bytes(4, "big")
    assert exchange(bytes(broken)) == pdu.a_abort(2, pdu.ABORT_INVALID_PARAMETER)
    # Silence: closed when the ARTIM timer (associate_timeout) runs out.
    assert exchange(b"") == b""

    rejects = lb.service("pacs")["dicom"]["rejects"]
    assert (rejects["not-associate-rq"], rejects["oversized"], rejects["malformed"], rejects["artim-timeout"]) \
        == (2, 1, 1, 1)
    assert lb.server("pacs", "pacs1")["total_connections"] == 0
    assert echoscu(vip).returncode == 0  # and the service keeps serving
    wait_until(lambda: lb.service("pacs")["active_connections"] == 0, 5, what="every connection to be released")


# --- health checks ----------------------------------------------------------------------


def test_c_echo_marks_a_refusing_pacs_down_where_a_tcp_check_calls_it_up(medlb, peers):
    picky = peers.scp("picky", "PICKY", reject="permanent")
    fast = {"interval": "500ms", "timeout": "450ms", "rise": 1, "fall": 1}
    lb = medlb([
        dicom_service("echo", free_port(), [server("picky", picky, ae_title="PICKY")],
                      health={"type": "dicom-echo", **fast}),
        service("plain", free_port(), [server("picky", picky)], health={"type": "tcp", **fast}),
    ])

    expected = "association rejected (permanent, service-user, reason 3: calling AE title not recognised)"
    wait_until(lambda: (lb.server("echo", "picky")["last_check"] or {}).get("reason") == expected, 15,
               what="a check that reports the reject")
    assert lb.server("echo", "picky")["health"] == "down"
    wait_until(lambda: lb.server("plain", "picky")["last_check"], 10, what="a tcp check")
    assert lb.server("plain", "picky")["health"] == "up"
    assert "reason 3: calling AE title not recognised" in lb.log()


def test_c_echo_uses_the_servers_ae_title_and_reports_a_wrong_one(medlb, peers):
    pacs1 = peers.scp("pacs1", "PACS1")
    lb = medlb([dicom_service("pacs", free_port(), [server("right", pacs1, ae_title="PACS1"),
                                                     server("wrong", pacs1, ae_title="NOTPACS1")])])

    wait_until(lambda: "reason 7: called AE title not recognised" in
               ((lb.server("pacs", "wrong")["last_check"] or {}).get("reason", "")), 15, what="a 1,1,7 check result")
    assert lb.server("pacs", "wrong")["health"] == "down"
    assert checked_up(lb, "pacs", "right")["last_check"]["reason"] == "C-ECHO status 0x0000"


def test_c_find_checks_orthanc_and_pynetdicom(medlb, peers):
    need_orthanc()
    orthanc = peers.orthanc("ORTHANC_Q")
    qr = peers.scp("qr", "QR1")
    find = {"type": "dicom-find", "interval": "500ms", "timeout": "450ms", "rise": 1, "fall": 1,
            "query": {"PatientID": "MEDLB-HEALTHCHECK", "StudyDate": "20240101-"}}
    lb = medlb([dicom_service("archive", free_port(), [server("orthanc", orthanc.dicom_port, ae_title="ORTHANC_Q"),
                                                        server("qr", qr, ae_title="QR1"),
                                                        server("blind", qr, ae_title="WRONG")], health=find)])

    for name in ("orthanc", "qr"):
        assert checked_up(lb, "archive", name)["last_check"]["reason"] == "C-FIND status 0x0000"
    lb.wait_health("archive", "blind", "down", 15)


# --- API and metrics --------------------------------------------------------------------


def test_metrics_show_associations_rejects_durations_and_echo_latency(medlb, peers):
    pacs1, vna1 = peers.scp("pacs1", "PACS1"), peers.scp("vna1", "VNA1")
    vip = free_port()
    lb = medlb([dicom_service("pacs", vip, [server("pacs1", pacs1, ae_title="PACS1")],
                              dicom={"allowed_calling_aes": ["CT*"],
                                     "routes": [{"called_ae": "ARCHIVE", "pool": "archive"}]},
                              pools={"archive": {"servers": [server("vna1", vna1, ae_title="VNA1")]}})])
    wait_all_up(lb, "pacs", ["pacs1", "vna1"])
    assert echoscu(vip, "CT1", "ARCHIVE").returncode == 0
    assert storescu(vip, sample_files(1), "CT2", "MEDLB").returncode == 0
    assert echoscu(vip, "XR9", "MEDLB").returncode != 0

    text = lb.api("GET", "/metrics").text

    by_calling = samples(text, "medlb_dicom_associations_by_calling_ae_total")
    assert by_calling[(("calling_ae", "CT1"), ("service", "pacs"))] == 1
    assert by_calling[(("calling_ae", "CT2"), ("service", "pacs"))] == 1
    by_called = samples(text, "medlb_dicom_associations_by_called_ae_total")
    assert by_called[(("called_ae", "ARCHIVE"), ("service", "pacs"))] == 1
    rejects = samples(text, "medlb_dicom_rejects_total")
    assert rejects[(("reason", "calling-ae-not-allowed"), ("service", "pacs"))] == 1
    assert samples(text, "medlb_dicom_association_duration_seconds_count")[(("service", "pacs"),)] == 2
    echo = samples(text, "medlb_dicom_echo_seconds_count")
    assert echo[(("backup", "false"), ("pool", "archive"), ("server", "vna1"), ("service", "pacs"))] >= 1
    connections = samples(text, "medlb_server_connections_total")
    assert connections[(("backup", "false"), ("pool", "archive"), ("server", "vna1"), ("service", "pacs"))] == 1
    traffic = samples(text, "medlb_server_bytes_total")
    assert traffic[(("backup", "false"), ("direction", "to_server"), ("pool", "default"), ("server", "pacs1"),
                    ("service", "pacs"))] > 39000  # CT_small went through
    assert "XR9" not in text or 'calling_ae="XR9"' not in text  # rejected titles are not association labels


def test_state_and_failover_work_per_server_in_a_named_pool(medlb, peers):
    pacs1, vna1, vna_dr = peers.scp("pacs1", "PACS1"), peers.scp("vna1", "VNA1"), peers.scp("vna-dr", "VNADR")
    vip = free_port()
    lb = medlb([dicom_service("pacs", vip, [server("pacs1", pacs1, ae_title="PACS1")],
                              dicom={"routes": [{"called_ae": "ARCHIVE", "pool": "archive"}]},
                              pools={"archive": {"servers": [server("vna1", vna1, ae_title="VNA1")],
                                                 "backup": [server("vna-dr", vna_dr, ae_title="VNADR")]}})])
    wait_all_up(lb, "pacs", ["pacs1", "vna1", "vna-dr"])

    assert lb.set_state("pacs", "vna1", "halt").status_code == 200
    assert lb.service("pacs")["pools"]["archive"]["active"] == "backup"
    assert echoscu(vip, "CT1", "ARCHIVE").returncode == 0
    assert lb.server("pacs", "vna-dr")["total_connections"] == 1
    assert lb.service("pacs")["pools"]["default"]["active"] == "primary"  # the other pool is untouched
    assert lb.set_state("pacs", "vna1", "online").status_code == 200
    assert echoscu(vip, "CT1", "ARCHIVE").returncode == 0
    assert lb.server("pacs", "vna1")["total_connections"] == 1


def test_a_256_mib_p_data_tf_streams_through_without_being_held(medlb):
    """One PDU far larger than every buffer: relayed as it comes, to a slow reader."""
    from pynetdicom.tests.encoded_pdu_items import a_associate_ac, a_associate_rq

    size = 256 << 20
    sink = socket.socket()
    sink.bind((LOOPBACK, 0))
    sink.listen(1)
    counted: dict[str, object] = {}

    def serve() -> None:
        conn, _ = sink.accept()
        with conn:
            reader = pdu.PduReader(1 << 20, frozenset({pdu.A_ASSOCIATE_RQ}))
            while (request := reader.feed(conn.recv(65536))) is None:
                pass
            counted["called_ae"] = pdu.parse_associate_rq(request).called_ae
            conn.sendall(a_associate_ac)
            stream, total, pause = pdu.PduStream(), 0, 0
            while stream.last_type != pdu.A_RELEASE_RQ or not stream.at_boundary:
                piece = conn.recv(256 * 1024)
                if not piece:
                    break
                stream.feed(piece)
                total += len(piece)
                if total >= pause:  # read slower than loopback can send
                    time.sleep(0.004)
                    pause += 1 << 20
            counted["bytes"], counted["pdus"] = total, stream.pdus
            conn.sendall(bytes.fromhex("06000000000400000000"))  # A-RELEASE-RP

    server_thread = threading.Thread(target=serve)
    server_thread.start()
    vip = free_port()
    lb = medlb([dicom_service("pacs", vip, [server("sink", sink.getsockname()[1], ae_title="SINK")],
                              health={"type": "none"})])
    # The relay runs in a worker when there are workers: the bound is on every process.
    workers = lb.config["workers"]
    assert len(process_tree(lb.proc.pid)) == (1 + workers if workers > 1 else 1)
    baseline = lb.rss_bytes()
    peak = [baseline]
    try:
        with socket.create_connection((LOOPBACK, vip), timeout=60) as client:
            client.sendall(a_associate_rq)
            header = client.recv(6)
            assert header[0] == pdu.A_ASSOCIATE_AC
            client.recv(pdu.pdu_header(header)[1], socket.MSG_WAITALL)
            # P-DATA-TF: one PDV item (context 1, last data fragment) of `size` bytes.
            client.sendall(b"\x04\x00" + (size + 6).to_bytes(4, "big") + (size + 2).to_bytes(4, "big") + b"\x01\x02")
            chunk = bytes(1 << 20)
            for index in range(size >> 20):
                client.sendall(chunk)
                if index % 16 == 0:
                    peak[0] = max(peak[0], lb.rss_bytes())
            client.sendall(pdu.A_RELEASE_RQ_BYTES)
            assert client.recv(10)[0] == pdu.A_RELEASE_RP
    finally:
        server_thread.join(60)
        sink.close()

    print(f"\n256 MiB P-DATA-TF relayed with {workers} worker(s): RSS summed over medlb's "
          f"{len(process_tree(lb.proc.pid))} processes {baseline >> 20} MiB at start, peak {peak[0] >> 20} MiB")
    assert counted["called_ae"] == "SINK"
    assert counted["bytes"] == 6 + size + 6 + 10 and counted["pdus"] == 2
    assert peak[0] - baseline < 32 << 20, f"medlb grew by {(peak[0] - baseline) >> 20} MiB"
    wait_until(lambda: lb.service("pacs")["dicom"]["active_associations"] == 0, 10, what="the association to end")
    assert lb.service("pacs")["dicom"]["aborts"] == {"server-gone": 0, "client-gone": 0, "medlb": 0}


@pytest.mark.parametrize("how", ["halt with on_halt: close", "idle_timeout"])
def test_medlb_ends_an_open_association_with_an_abort(medlb, peers, how):
    pacs1 = peers.scp("pacs1", "PACS1")
    vip = free_port()
    extra = {"on_halt": "close"} if how.startswith("halt") else {"limits": {"idle_timeout": "500ms"}}
    lb = medlb([dicom_service("pacs", vip, [server("pacs1", pacs1, ae_title="PACS1")], health={"type": "none"},
                              **extra)])
    assoc, received = associate_recording(vip)

    if how.startswith("halt"):
        assert lb.set_state("pacs", "pacs1", "halt").status_code == 200

    wait_until(lambda: assoc.is_aborted, 10, what="the association to be aborted")
    assert any(isinstance(item, A_ABORT_RQ) for item in received)
    wait_until(lambda: lb.server("pacs", "pacs1")["active_connections"] == 0, 10, what="the server side to close")
    assert lb.service("pacs")["dicom"]["aborts"]["medlb"] == 1


def test_a_reload_changes_routing_for_new_associations(medlb, peers):
    pacs1, vna1 = peers.scp("pacs1", "PACS1"), peers.scp("vna1", "VNA1")
    vip = free_port()
    archive = {"archive": {"servers": [server("vna1", vna1, ae_title="VNA1")]}}
    config = dicom_service("pacs", vip, [server("pacs1", pacs1, ae_title="PACS1")], health={"type": "none"},
                           pools=archive)
    lb = medlb([config])
    assert echoscu(vip, "CT1", "ARCHIVE").returncode == 0  # no route yet: the default pool
    assert lb.server("pacs", "pacs1")["total_connections"] == 1

    config["dicom"] = {"allowed_calling_aes": ["CT*"], "routes": [{"called_ae": "ARCHIVE", "pool": "archive"}]}
    lb.write_config(lb.config)
    assert lb.api("POST", "/api/v1/reload").status_code == 200

    assert echoscu(vip, "CT1", "ARCHIVE").returncode == 0
    assert lb.server("pacs", "vna1")["total_connections"] == 1
    assert "Calling AE Title Not Recognized" in output(echoscu(vip, "US1", "ARCHIVE"))
    view = lb.service("pacs")["dicom"]
    assert view["total_associations"] == 2 and view["rejects"]["calling-ae-not-allowed"] == 1


# --- AE titles PS3.5 does not allow ---------------------------------------------------------


def verification_rq(calling: bytes, called: bytes) -> bytes:
    """pynetdicom's A-ASSOCIATE-RQ for Verification, with the AE title fields then set to
    bytes pynetdicom itself refuses to send (it validates titles), by medlb's codec."""
    from pynetdicom.pdu import A_ASSOCIATE_RQ
    from pynetdicom.pdu_primitives import A_ASSOCIATE, MaximumLengthNotification
    from pynetdicom.presentation import build_context

    primitive = A_ASSOCIATE()
    primitive.application_context_name = "1.2.840.10008.3.1.1.1"
    primitive.calling_ae_title = "PLACEHOLDER"
    primitive.called_ae_title = "PLACEHOLDER"
    context = build_context(Verification)
    context.context_id = 1
    primitive.presentation_context_definition_list = [context]
    length = MaximumLengthNotification()
    length.maximum_length_received = 16384
    primitive.user_information = [length]
    encoded = bytearray(pdu.replace_called_ae(A_ASSOCIATE_RQ(primitive).encode(), called.ljust(16)))
    encoded[pdu.CALLING_AE] = calling.ljust(16)
    return bytes(encoded)


@pytest.mark.parametrize("calling, called, reason, label", [
    (b"CT\x1b1", b"MEDLB", 3, "calling-ae-invalid"),     # an escape (control) character
    (b"CT1", b"MED\\LB", 7, "called-ae-invalid"),        # a backslash, DICOM's value separator
])
def test_an_ae_title_with_a_control_character_or_backslash_is_refused_permanently_at_medlb(
        medlb, peers, tmp_path, calling, called, reason, label):
    from pynetdicom.pdu import A_ASSOCIATE_RJ

    requests = tmp_path / "requests.jsonl"
    pacs1 = peers.scp("pacs1", "PACS1", log=requests)
    vip = free_port()
    # Checks slow enough not to flap on a loaded machine: "still up" must mean something.
    lb = medlb([dicom_service("pacs", vip, [server("pacs1", pacs1, ae_title="PACS1")],
                              health={"type": "dicom-echo", "interval": "1s", "timeout": "900ms", "rise": 1,
                                      "fall": 3})])
    checked_up(lb, "pacs", "pacs1")

    with socket.create_connection((LOOPBACK, vip), timeout=10) as sock:
        sock.sendall(verification_rq(calling, called))
        answer = recv_all(sock)

    assert answer == pdu.associate_rj(1, 1, reason)
    rejection = A_ASSOCIATE_RJ()
    rejection.decode(answer)  # as a pynetdicom client reads it: final, not "try again later"
    assert (rejection.result_str, rejection.source_str) == ("Rejected (Permanent)", "DUL service-user")
    assert rejection.reason_str == f"{'Calling' if reason == 3 else 'Called'} AE title not recognised"
    assert lb.service("pacs")["dicom"]["rejects"][label] == 1
    view = checked_up(lb, "pacs", "pacs1")  # still up, and nothing counted against it
    assert (view["connect_failures"], view["total_connections"], view["active_connections"]) == (0, 0, 0)
    assert echoscu(vip, "CT1", "MEDLB").returncode == 0  # the service keeps serving valid titles
    # What the SCP received, as sent: besides medlb's C-ECHO checks (calling AE MEDLB),
    # only the valid association; the refused one never reached it.
    seen = [json.loads(line) for line in requests.read_text().splitlines()]
    titles = [(bytes.fromhex(r["calling_ae"]).rstrip(b" "), bytes.fromhex(r["called_ae"]).rstrip(b" ")) for r in seen]
    assert [pair for pair in titles if pair[0] != b"MEDLB"] == [(b"CT1", b"PACS1")]
