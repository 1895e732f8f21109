"""`dicomweb`: a QIDO-RS query, `GET [base]/studies?limit=1`, must answer 200 or 204.

200 must carry DICOM JSON (a JSON array); 204 means an empty archive, which is healthy.
The path includes the base, e.g. `/dicom-web/studies?limit=1` for Orthanc.
"""

from __future__ import annotations

import json

from medlb.config.models import DicomwebCheck
from medlb.health.base import CheckTarget, Outcome
from medlb.health.http import NotHttp, request


async def check(target: CheckTarget, config: DicomwebCheck) -> Outcome:
    try:
        answer = await request(target, "GET", config.path, headers=[("Accept", "application/dicom+json")],
                               max_body=256 * 1024)
    except NotHttp as exc:
        return Outcome(False, str(exc))
    if answer.status == 204:
        return Outcome(True, "status 204 (no studies)")
    if answer.status != 200:
        return Outcome(False, f"status {answer.status} from {config.path}, expected 200 or 204")
    try:
        document = json.loads(answer.body) if answer.body.strip() else []
    except ValueError:
        return Outcome(False, "status 200 but the body is not DICOM JSON")
    if not isinstance(document, list):
        return Outcome(False, "status 200 but the body is not a DICOM JSON array")
    return Outcome(True, f"status 200 ({len(document)} stud{'y' if len(document) == 1 else 'ies'})")
