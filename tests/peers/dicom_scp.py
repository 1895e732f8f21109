"""A real DICOM SCP for tests, built on pynetdicom.

  python dicom_scp.py --ae PACS1 --port 11112 [--store DIR] [--reject permanent|transient]
                      [--tls-cert CERT --tls-key KEY] [--log FILE]

By default it answers only to its own AE title (require_called_aet: any other called
AE gets A-ASSOCIATE-RJ 1,1,7), so an association that succeeds through medlb proves
that medlb rewrote the called AE. It serves Verification (C-ECHO), every storage SOP
class in every transfer syntax (with --store each instance is written to
DIR/<SOP Instance UID>.dcm, as received), and Study Root C-FIND (no matches).

--reject permanent rejects every association as an archive that does not know the
caller (1,1,3); --reject transient rejects every one as a busy archive (2,3,2). Either
way the TCP port stays open. With --log, the AE title fields of every A-ASSOCIATE-RQ
that arrives are appended to FILE as a JSON line, in hex and as sent (before pynetdicom
decodes, or refuses, the PDU). Prints `ready` once listening; stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
from pathlib import Path

from pynetdicom import ALL_TRANSFER_SYNTAXES, AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind, Verification


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ae", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--store")
    parser.add_argument("--reject", choices=["permanent", "transient"])
    parser.add_argument("--tls-cert", help="serve DICOM TLS with this certificate (and --tls-key)")
    parser.add_argument("--tls-key")
    parser.add_argument("--log")
    args = parser.parse_args()
    ssl_context = None
    if args.tls_cert:
        import ssl

        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_context.load_cert_chain(args.tls_cert, args.tls_key)

    ae = AE(ae_title=args.ae)
    ae.require_called_aet = True
    ae.add_supported_context(Verification)
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    if args.reject == "permanent":
        ae.require_calling_aet = ["NOBODY-KNOWN"]
    elif args.reject == "transient":
        # Below pynetdicom's validated minimum of 1: every association is "one too many".
        ae._maximum_associations = 0
    folder = Path(args.store) if args.store else None

    def on_store(event):  # type: ignore[no-untyped-def]
        if folder is not None:
            uid = event.request.AffectedSOPInstanceUID
            scratch = folder / f".{uid}.part"
            scratch.write_bytes(event.encoded_dataset())
            os.replace(scratch, folder / f"{uid}.dcm")  # a file is there whole or not at all
        return 0x0000

    def on_find(event):  # type: ignore[no-untyped-def]
        yield 0x0000, None

    requests = open(args.log, "a", buffering=1) if args.log else None

    def on_data(event):  # type: ignore[no-untyped-def]
        data = event.data
        if requests is not None and data[:1] == b"\x01" and len(data) >= 74:
            requests.write(json.dumps({"called_ae": data[10:26].hex(), "calling_ae": data[26:42].hex()}) + "\n")

    server = ae.start_server((args.host, args.port), block=False, ssl_context=ssl_context,
                             evt_handlers=[(evt.EVT_C_STORE, on_store), (evt.EVT_C_FIND, on_find),
                                           (evt.EVT_DATA_RECV, on_data)])
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print("ready", flush=True)
    stop.wait()
    server.shutdown()


if __name__ == "__main__":
    main()
