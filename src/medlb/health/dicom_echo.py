"""`dicom-echo`: associate for Verification, C-ECHO, expect status 0x0000, release.

Proves the DICOM application answers (it accepts medlb's AE titles and serves a
request), where a TCP check only proves that something listens. The association is
released, not aborted, so the archive logs a normal association rather than an error
every few seconds. The C-ECHO round trip alone is reported for the latency histogram.
"""

from __future__ import annotations

import ssl
import time

from pynetdicom.sop_class import Verification

from medlb.config.models import DicomEchoCheck
from medlb.health.base import CheckTarget, Outcome
from medlb.health.dicom_assoc import ae_titles, associate, budget, in_thread, tls_args


def _echo(host: str, port: int, calling: str, called: str, seconds: float,
          tls: tuple[ssl.SSLContext, str] | None = None) -> Outcome:
    assoc = associate(calling, Verification, host, port, called, seconds, tls)
    if isinstance(assoc, Outcome):
        return assoc
    try:
        started = time.perf_counter()
        response = assoc.send_c_echo()
        round_trip = time.perf_counter() - started
        status = response.get("Status") if response else None
        if status is None:
            return Outcome(False, f"no C-ECHO response within {seconds:g}s")
        if status != 0x0000:
            return Outcome(False, f"C-ECHO status 0x{status:04X}")
        return Outcome(True, "C-ECHO status 0x0000", echo_seconds=round_trip)
    finally:
        if assoc.is_established:
            assoc.release()


async def check(target: CheckTarget, config: DicomEchoCheck) -> Outcome:
    calling, called = ae_titles(target, config)
    return await in_thread(_echo, target.host, target.port, calling, called, budget(config), tls_args(target))
