"""`xds`: an XDS.b registry or repository answers its SOAP endpoint.

By default a synthetic ITI-18 Registry Stored Query (FindDocuments for a patient that
does not exist) is POSTed as simple SOAP 1.2 to `path`, and the answer must be a SOAP
response whose `status` is `...ResponseStatusType:Success` (an empty result is still a
success). `soap_request` replaces the envelope (for a repository, or a site's own
query). With `wsdl: true` the check is `GET path?wsdl` instead (CXF, Axis2), which must
answer 200 with a WSDL document.
"""

from __future__ import annotations

import re
import uuid

from medlb.config.models import XdsCheck
from medlb.health.base import CheckTarget, Outcome
from medlb.health.http import NotHttp, request

ACTION = "urn:ihe:iti:2007:RegistryStoredQuery"
SUCCESS = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"
_STATUS = re.compile(rb'status\s*=\s*"([^"]+)"')

STORED_QUERY = """<?xml version="1.0" encoding="UTF-8"?>
<soap:Envelope xmlns:soap="http://www.w3.org/2003/05/soap-envelope" xmlns:wsa="http://www.w3.org/2005/08/addressing">
 <soap:Header>
  <wsa:Action soap:mustUnderstand="true">urn:ihe:iti:2007:RegistryStoredQuery</wsa:Action>
  <wsa:MessageID>urn:uuid:{message_id}</wsa:MessageID>
  <wsa:ReplyTo><wsa:Address>http://www.w3.org/2005/08/addressing/anonymous</wsa:Address></wsa:ReplyTo>
  <wsa:To soap:mustUnderstand="true">{to}</wsa:To>
 </soap:Header>
 <soap:Body>
  <query:AdhocQueryRequest xmlns:query="urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0"
      xmlns:rim="urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0">
   <query:ResponseOption returnType="ObjectRef" returnComposedObjects="false"/>
   <rim:AdhocQuery id="urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d">
    <rim:Slot name="$XDSDocumentEntryPatientId">
     <rim:ValueList><rim:Value>'MEDLB-HEALTH^^^&amp;1.3.6.1.4.1.21367.2005.3.7&amp;ISO'</rim:Value></rim:ValueList>
    </rim:Slot>
    <rim:Slot name="$XDSDocumentEntryStatus">
     <rim:ValueList><rim:Value>('urn:oasis:names:tc:ebxml-regrep:StatusType:Approved')</rim:Value></rim:ValueList>
    </rim:Slot>
   </rim:AdhocQuery>
  </query:AdhocQueryRequest>
 </soap:Body>
</soap:Envelope>
"""


async def check(target: CheckTarget, config: XdsCheck) -> Outcome:
    try:
        if config.wsdl:
            path = config.path + ("&wsdl" if "?" in config.path else "?wsdl")
            answer = await request(target, "GET", path, max_body=256 * 1024)
            if answer.status != 200:
                return Outcome(False, f"status {answer.status} from {path}, expected 200")
            if b"definitions" not in answer.body:
                return Outcome(False, f"status 200 but {path} is not a WSDL document")
            return Outcome(True, "status 200 (WSDL)")
        scheme = "https" if target.backend_tls is not None else "http"
        envelope = config.soap_request or STORED_QUERY.format(
            message_id=uuid.uuid4(), to=f"{scheme}://{target.host}:{target.port}{config.path}")
        answer = await request(target, "POST", config.path, body=envelope.encode(), max_body=256 * 1024, headers=[
            ("Content-Type", f'application/soap+xml; charset=UTF-8; action="{ACTION}"')])
    except NotHttp as exc:
        return Outcome(False, str(exc))
    if answer.status != 200:
        return Outcome(False, f"status {answer.status} from the SOAP endpoint, expected 200")
    found = _STATUS.search(answer.body)
    if found is None:
        return Outcome(False, "status 200 but no registry response status in the SOAP answer")
    status = found.group(1).decode("latin-1")
    if status != SUCCESS:
        return Outcome(False, f"registry answered {status.rsplit(':', 1)[-1]}, expected Success")
    return Outcome(True, "registry stored query: Success")
