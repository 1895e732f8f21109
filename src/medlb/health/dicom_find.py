"""`dicom-find`: a Study Root C-FIND at STUDY level with the configured query keys.

Proves the archive's database answers, not only its DICOM listener. Success (0x0000),
pending (0xFF00, 0xFF01) and cancel (0xFE00) mean up; failures (0xA700 out of
resources, 0xA900 identifier does not match SOP class, 0xCxxx unable to process) mean
down, with the status in the reason. A query that matches is cancelled after the
first match, so a broad query cannot keep the check reading. Matches are never looked
at, kept or logged: they may hold patient data.
"""

from __future__ import annotations

import ssl
from pydicom.dataset import Dataset
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as StudyRootFind

from medlb.config.models import DicomFindCheck
from medlb.health.base import CheckTarget, Outcome
from medlb.health.dicom_assoc import ae_titles, associate, budget, in_thread, tls_args

SUCCESS = 0x0000
PENDING = (0xFF00, 0xFF01)
CANCELLED = 0xFE00


def _find(host: str, port: int, calling: str, called: str, seconds: float, query: dict[str, str],
          tls: tuple[ssl.SSLContext, str] | None = None) -> Outcome:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    for keyword, value in query.items():
        setattr(identifier, keyword, value)
    assoc = associate(calling, StudyRootFind, host, port, called, seconds, tls)
    if isinstance(assoc, Outcome):
        return assoc
    try:
        final: int | None = None
        matches = 0
        responses = assoc.send_c_find(identifier, StudyRootFind, msg_id=1)
        for status, _ in responses:
            code = status.get("Status") if status else None
            if code is None:
                return Outcome(False, f"no C-FIND response within {seconds:g}s")
            if code in PENDING:
                matches += 1
                if matches == 1:
                    assoc.send_c_cancel(1, query_model=StudyRootFind)
                continue
            final = int(code)
        if final in (SUCCESS, CANCELLED):
            return Outcome(True, f"C-FIND status 0x{final:04X}" + (" (cancelled after a match)" if final == CANCELLED
                                                                      else ""))
        if final is None:
            return Outcome(False, "the C-FIND ended without a final status")
        return Outcome(False, f"C-FIND status 0x{final:04X}")
    finally:
        if assoc.is_established:
            assoc.release()


async def check(target: CheckTarget, config: DicomFindCheck) -> Outcome:
    calling, called = ae_titles(target, config)
    return await in_thread(_find, target.host, target.port, calling, called, budget(config), dict(config.query),
                           tls_args(target))
