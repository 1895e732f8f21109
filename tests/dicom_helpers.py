"""DICOM peers and clients for the dicom mode's tests: real processes on loopback.

SCPs: tests/peers/dicom_scp.py (pynetdicom), dcmtk's storescp, Orthanc. Clients:
dcmtk's echoscu and storescu, and pynetdicom in the test process. Sample data:
pydicom's bundled test files, never downloaded.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from pydicom import dcmread
from pydicom.data import get_testdata_file

from helpers import LOOPBACK, PEERS, free_port, wait_until

#: Uncompressed files with distinct SOP Instance UIDs, of SOP classes storescu proposes
#: and every test SCP accepts.
SAMPLE_NAMES = ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "rtdose.dcm", "waveform_ecg.dcm",
                "reportsi.dcm", "test-SR.dcm", "SC_rgb_small_odd.dcm"]


def orthanc_binary() -> str | None:
    """Debian installs Orthanc in /usr/sbin, which a non-root PATH often lacks."""
    found = shutil.which("Orthanc")
    if found is None and os.access("/usr/sbin/Orthanc", os.X_OK):
        found = "/usr/sbin/Orthanc"
    return found


def sample_files(count: int = len(SAMPLE_NAMES)) -> list[Path]:
    return [Path(get_testdata_file(name, download=False)) for name in SAMPLE_NAMES[:count]]


def sop_uid(path: Path) -> str:
    return str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def dicom_service(name: str, listen: int, servers: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """A dicom service dict on loopback with fast C-ECHO checks (tests only)."""
    base: dict[str, Any] = {
        "name": name,
        "mode": "dicom",
        "listen": [f"{LOOPBACK}:{listen}"],
        # pynetdicom's reactor polls; under a loaded CI machine a check can take 100s of ms.
        "health": {"type": "dicom-echo", "interval": "500ms", "timeout": "450ms", "rise": 1, "fall": 2},
        "servers": servers,
    }
    base.update(extra)
    return base


def echoscu(port: int, calling: str = "CT1", called: str = "MEDLB", *extra: str) -> subprocess.CompletedProcess[str]:
    """dcmtk echoscu through medlb; its verdict is in returncode and output."""
    return subprocess.run(["echoscu", "-aet", calling, "-aec", called, "-to", "10", "-ta", "10",
                           *extra, LOOPBACK, str(port)], capture_output=True, text=True, timeout=60)


def storescu(port: int, files: list[Path], calling: str = "CT1", called: str = "MEDLB") -> subprocess.CompletedProcess[str]:
    return subprocess.run(["storescu", "-aet", calling, "-aec", called, "-to", "10", "-ta", "10",
                           LOOPBACK, str(port), *map(str, files)], capture_output=True, text=True, timeout=120)


def output(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout + result.stderr


class Orthanc:
    """An Orthanc (Debian's package) that answers only to its own AE title."""

    def __init__(self, folder: Path, ae: str):
        folder.mkdir()
        self.ae = ae
        self.dicom_port, self.http_port = free_port(), free_port()
        config = {
            "Name": ae, "StorageDirectory": str(folder / "db"), "IndexDirectory": str(folder / "db"),
            "DicomAet": ae, "DicomPort": self.dicom_port, "HttpPort": self.http_port,
            "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "DicomCheckCalledAet": True,
            "DicomAlwaysAllowEcho": True, "DicomAlwaysAllowStore": True, "DicomAlwaysAllowFind": True,
            "Plugins": [], "HttpsVerifyPeers": False,
        }
        path = folder / "orthanc.json"
        path.write_text(json.dumps(config))
        self.log = open(folder / "orthanc.log", "wb")
        self.proc = subprocess.Popen([orthanc_binary() or "Orthanc", str(path)], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        wait_until(self._up, 30, what="Orthanc to answer on HTTP")

    def _up(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"Orthanc exited with {self.proc.returncode}")
        try:
            return httpx.get(f"http://{LOOPBACK}:{self.http_port}/system", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def sop_uids(self) -> set[str]:
        instances = httpx.get(f"http://{LOOPBACK}:{self.http_port}/instances?expand", timeout=10).json()
        return {item["MainDicomTags"]["SOPInstanceUID"] for item in instances}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class DicomPeers:
    """SCP processes a test starts, kills and reads back."""

    def __init__(self, tmp_path: Path):
        self.tmp_path = tmp_path
        self.procs: dict[str, subprocess.Popen[str]] = {}
        self.folders: dict[str, Path] = {}
        self.orthancs: list[Orthanc] = []

    def _folder(self, name: str) -> Path:
        folder = self.tmp_path / f"scp-{name}"
        folder.mkdir(exist_ok=True)  # an SCP started again after a kill keeps its folder
        self.folders[name] = folder
        return folder

    def scp(self, name: str, ae: str, port: int | None = None, reject: str | None = None,
            tls: tuple[Path, Path] | None = None, log: Path | None = None) -> int:
        """A pynetdicom SCP that answers only to `ae` and stores into folders[name];
        with tls=(cert, key) it speaks DICOM TLS only; with log, it records the AE
        titles of every A-ASSOCIATE-RQ it receives (see tests/peers/dicom_scp.py)."""
        port = port or free_port()
        args = [sys.executable, str(PEERS / "dicom_scp.py"), "--ae", ae, "--port", str(port),
                "--store", str(self._folder(name))]
        if reject:
            args += ["--reject", reject]
        if tls:
            args += ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])]
        if log:
            args += ["--log", str(log)]
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        if (proc.stdout.readline() if proc.stdout else "").strip() != "ready":
            proc.kill()
            raise RuntimeError(f"SCP {name} did not start on port {port}")
        self.procs[name] = proc
        return port

    def storescp(self, name: str, ae: str, port: int | None = None) -> int:
        """dcmtk's storescp, storing into folders[name] (it does not check the called AE)."""
        port = port or free_port()
        folder = self._folder(name)
        log = open(folder.parent / f"storescp-{name}.log", "wb")
        proc = subprocess.Popen(["storescp", "--fork", "-aet", ae, "-od", str(folder), str(port)],
                                stdout=log, stderr=subprocess.STDOUT, text=True)
        try:
            wait_until(lambda: echoscu(port, "PROBE", ae).returncode == 0 or proc.poll() is not None, 15,
                       what=f"storescp {name} to answer")
            assert proc.poll() is None, f"storescp {name} exited"
        except AssertionError:
            proc.kill()  # not left running behind a failed start (a port in use, say)
            proc.wait()
            raise
        self.procs[name] = proc
        return port

    def orthanc(self, ae: str) -> Orthanc:
        instance = Orthanc(self.tmp_path / f"orthanc-{ae}", ae)
        self.orthancs.append(instance)
        return instance

    def stored(self, name: str) -> set[str]:
        """SOP Instance UIDs of the files an SCP stored."""
        return {sop_uid(path) for path in self.folders[name].iterdir() if path.is_file()
                and not path.name.startswith(".")}

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.kill()
        proc.wait()

    def stop_all(self) -> None:
        for name in list(self.procs):
            proc = self.procs.pop(name)
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for instance in self.orthancs:
            instance.stop()
