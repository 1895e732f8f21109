"""Orthanc (Debian's package, with orthanc-dicomweb) behind mode http: STOW-RS, QIDO-RS
and WADO-RS through the VIP, and the dicomweb check marking a stopped Orthanc down."""

from __future__ import annotations

import json
import os
import subprocess

import httpx
import pydicom
import pytest
from pydicom.data import get_testdata_file

from conftest import IN_CI, need_tool
from helpers import LOOPBACK, free_ports, server, wait_until

PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"


@pytest.fixture
def orthanc(tmp_path):
    binary = need_tool("Orthanc")
    if not os.path.exists(PLUGIN):
        message = f"{PLUGIN} is missing (the orthanc-dicomweb package; scripts/system-deps.sh installs it)"
        pytest.fail(f"CI must have it: {message}") if IN_CI else pytest.skip(message)
    http_port, dicom_port = free_ports(2)
    storage = tmp_path / "orthanc"
    config = {"Name": "ORTHANC_A", "StorageDirectory": str(storage), "IndexDirectory": str(storage),
              "DicomAet": "ORTHANC_A", "DicomPort": dicom_port, "HttpPort": http_port,
              "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
              "DicomCheckCalledAet": False, "DicomAlwaysAllowEcho": True, "DicomAlwaysAllowStore": True,
              "Plugins": [PLUGIN], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}}
    path = tmp_path / "orthanc.json"
    path.write_text(json.dumps(config))
    log = open(tmp_path / "orthanc.log", "wb")
    proc = subprocess.Popen([binary, str(path)], stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"Orthanc exited: {(tmp_path / 'orthanc.log').read_text()[-2000:]}")
        try:
            return httpx.get(f"http://{LOOPBACK}:{http_port}/system", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(ready, 30, what="Orthanc to answer /system")
    yield proc, http_port
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    log.close()


def test_stow_qido_wado_through_medlb_and_a_stopped_orthanc_goes_down(medlb, orthanc):
    proc, http_port = orthanc
    vip = free_ports(1)[0]
    lb = medlb([{"name": "dicomweb", "mode": "http", "listen": [f"{LOOPBACK}:{vip}"],
                 "health": {"type": "dicomweb", "path": "/dicom-web/studies?limit=1", "interval": "300ms",
                            "timeout": "250ms", "rise": 1, "fall": 2},
                 "servers": [server("orthanc-a", http_port)]}])
    lb.wait_health("dicomweb", "orthanc-a", "up", 15)

    path = get_testdata_file("CT_small.dcm", download=False)
    dataset = pydicom.dcmread(path)
    study = str(dataset.StudyInstanceUID)
    boundary = "medlb-test-boundary"
    with open(path, "rb") as file:
        payload = file.read()
    body = (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + payload
            + f"\r\n--{boundary}--\r\n".encode())
    base = f"http://{LOOPBACK}:{vip}/dicom-web"
    with httpx.Client(timeout=30) as client:
        stored = client.post(f"{base}/studies", content=body, headers={
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Accept": "application/dicom+json"})
        assert stored.status_code == 200, stored.text

        found = client.get(f"{base}/studies", params={"StudyInstanceUID": study},
                           headers={"Accept": "application/dicom+json"})
        assert found.status_code == 200
        [match] = found.json()
        assert match["0020000D"]["Value"] == [study]

        retrieved = client.get(f"{base}/studies/{study}",
                               headers={"Accept": 'multipart/related; type="application/dicom"'})
        assert retrieved.status_code == 200
        assert retrieved.headers["content-type"].startswith("multipart/related")
        assert b"DICM" in retrieved.content and str(dataset.SOPInstanceUID).encode() in retrieved.content

    proc.kill()
    proc.wait()
    lb.wait_health("dicomweb", "orthanc-a", "down", 15)
    assert httpx.get(f"{base}/studies", timeout=10).status_code == 503
