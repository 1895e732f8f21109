"""`fhir`: `GET [base]/metadata` must answer 200 with a CapabilityStatement.

A FHIR server that is up but broken often still answers 200 from a proxy or an error
page; the check reads the JSON and wants `resourceType: CapabilityStatement` (or
`Conformance` from DSTU2 servers). The statement can be large, so at most `max_body`
bytes are read; `resourceType` comes first in practice, and a cut-off body is searched
for it rather than parsed.
"""

from __future__ import annotations

import json
import re

from medlb.config.models import FhirCheck
from medlb.health.base import CheckTarget, Outcome
from medlb.health.http import NotHttp, request

MAX_BODY = 1024 * 1024
_RESOURCE_TYPE = re.compile(rb'"resourceType"\s*:\s*"([A-Za-z]+)"')
_FHIR_VERSION = re.compile(rb'"fhirVersion"\s*:\s*"([^"]{1,20})"')


async def check(target: CheckTarget, config: FhirCheck) -> Outcome:
    try:
        answer = await request(target, "GET", config.path, headers=[("Accept", "application/fhir+json")],
                               max_body=MAX_BODY)
    except NotHttp as exc:
        return Outcome(False, str(exc))
    if answer.status != 200:
        return Outcome(False, f"status {answer.status} from {config.path}, expected 200")
    resource_type = None
    try:
        document = json.loads(answer.body)
        if isinstance(document, dict):
            resource_type = document.get("resourceType")
    except ValueError:
        found = _RESOURCE_TYPE.search(answer.body[:4096]) if len(answer.body) >= MAX_BODY else None
        resource_type = found.group(1).decode() if found else None
    if resource_type not in ("CapabilityStatement", "Conformance"):
        what = f"resourceType {resource_type!r}" if resource_type else "no FHIR JSON resource"
        return Outcome(False, f"{config.path} answered 200 but with {what}, not a CapabilityStatement")
    version = _FHIR_VERSION.search(answer.body)
    return Outcome(True, f"{resource_type}" + (f" (FHIR {version.group(1).decode()})" if version else ""))
