"""DICOM TLS (PS3.15 B.1, port 2762 by convention): offload, bridging, mutual TLS.

pynetdicom is the TLS client and (for bridging) the TLS SCP; certificates come from a
throwaway CA made in the test's folder.
"""

from __future__ import annotations

import ssl

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from dicom_helpers import DicomPeers, dicom_service
from helpers import LOOPBACK, free_port, server, wait_until
from tlscerts import TestCA


@pytest.fixture
def peers(tmp_path):
    group = DicomPeers(tmp_path)
    yield group
    group.stop_all()


def echo(port: int, context: ssl.SSLContext | None, calling: str = "CT1") -> int | str:
    """C-ECHO to medlb's VIP; the status, or why there was none."""
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = ae.dimse_timeout = 10
    tls_args = (context, "localhost") if context is not None else None
    assoc = ae.associate(LOOPBACK, port, ae_title="MEDLB", tls_args=tls_args)
    if not assoc.is_established:
        return "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "no association"
    try:
        response = assoc.send_c_echo()
        return int(response.Status) if response else "no response"
    finally:
        assoc.release()


def client_context(ca: TestCA, cert=None) -> ssl.SSLContext:  # type: ignore[no-untyped-def]
    context = ssl.create_default_context(cafile=str(ca.path))
    if cert is not None:
        context.load_cert_chain(str(cert.cert), str(cert.key))
    return context


def test_dicom_tls_offload_to_a_plain_pacs(medlb, peers, tmp_path):
    ca = TestCA(tmp_path / "pki")
    leaf = ca.issue("vip", dns=["localhost"])
    scp_port = peers.scp("pacs1", "PACS1")
    vip = free_port()
    lb = medlb([dicom_service("pacs", vip, [server("pacs1", scp_port, ae_title="PACS1")],
                              tls={"cert": str(leaf.cert), "key": str(leaf.key)})])
    wait_until(lambda: ((view := lb.server("pacs", "pacs1"))["last_check"] or {}).get("ok") and view["health"] == "up", 20,
               what="a passing C-ECHO check")

    assert echo(vip, client_context(ca)) == 0x0000
    assert echo(vip, None) in ("aborted", "no association")  # plain DICOM on the TLS port goes nowhere
    stored = lb.service("pacs")
    assert stored["tls"]["handshakes"] >= 1


def test_dicom_tls_bridging_with_the_c_echo_check_over_tls(medlb, peers, tmp_path):
    backend_ca = TestCA(tmp_path / "backend-pki", name="archive CA")
    archive = backend_ca.issue("archive", dns=["localhost"])
    scp_port = peers.scp("vna1", "VNA1", tls=(archive.cert, archive.key))
    vip = free_port()
    lb = medlb([dicom_service("vna", vip, [server("vna1", scp_port, ae_title="VNA1")],
                              backend_tls={"verify": True, "ca": str(backend_ca.path), "server_name": "localhost"})])

    wait_until(lambda: (lb.server("vna", "vna1")["last_check"] or {}).get("ok"), 15,
               what="the C-ECHO check to pass over DICOM TLS")
    assert echo(vip, None) == 0x0000  # a plain modality, re-encrypted by medlb to the archive


def test_dicom_tls_check_with_the_wrong_ca_marks_the_archive_down(medlb, peers, tmp_path):
    backend_ca = TestCA(tmp_path / "backend-pki", name="archive CA")
    other_ca = TestCA(tmp_path / "other-pki", name="other CA")
    archive = backend_ca.issue("archive", dns=["localhost"])
    scp_port = peers.scp("vna1", "VNA1", tls=(archive.cert, archive.key))
    vip = free_port()
    lb = medlb([dicom_service("vna", vip, [server("vna1", scp_port, ae_title="VNA1")],
                              backend_tls={"verify": True, "ca": str(other_ca.path), "server_name": "localhost"})])

    lb.wait_health("vna", "vna1", "down", 15)
    assert echo(vip, None) == "rejected"  # medlb answers the modality itself: nothing can serve


def test_mutual_tls_refuses_a_modality_without_a_client_certificate(medlb, peers, tmp_path):
    ca = TestCA(tmp_path / "pki")
    leaf = ca.issue("vip", dns=["localhost"])
    modality = ca.issue("ct1", dns=["ct1.hospital.example"], client=True)
    scp_port = peers.scp("pacs1", "PACS1")
    vip = free_port()
    lb = medlb([dicom_service("pacs", vip, [server("pacs1", scp_port, ae_title="PACS1")],
                              tls={"cert": str(leaf.cert), "key": str(leaf.key), "client_ca": str(ca.path),
                                   "verify_client": "required"})])
    wait_until(lambda: ((view := lb.server("pacs", "pacs1"))["last_check"] or {}).get("ok") and view["health"] == "up", 20,
               what="a passing C-ECHO check")

    assert echo(vip, client_context(ca, modality)) == 0x0000
    assert echo(vip, client_context(ca)) in ("aborted", "no association")
    assert sum(lb.service("pacs")["tls"]["handshake_failures"].values()) >= 1
