"""A real MLLP receiver for tests, built on python-hl7's asyncio MLLP server.

  python mllp_server.py --name E1 --port 2575 --log received.jsonl [--mode aa|ae|wrong-msa|silent]

For every message it appends a JSON line to --log (flushed at once, so a killed server
leaves an exact record): server name, MSH-10, PID-3, MSH-9, a nanosecond timestamp, and
how many MLLP start bytes (0x0B) the message holds (a message must hold none).
Modes: `aa` answers with python-hl7's create_ack (AA); `ae` answers AE; `wrong-msa`
answers AA with an MSA-2 that is not the message's MSH-10; `silent` never answers.
Prints `ready` once listening.
"""

import argparse
import asyncio
import json
import signal
import time

from hl7.mllp import start_hl7_server


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--mode", default="aa", choices=["aa", "ae", "wrong-msa", "silent"])
    args = parser.parse_args()
    log = open(args.log, "a", buffering=1)

    async def handle(reader, writer) -> None:
        try:
            while not writer.is_closing():
                message = await reader.readmessage()
                msh = message.segment("MSH")
                try:
                    pid3 = str(message.segment("PID")(3))
                except KeyError:
                    pid3 = ""
                log.write(json.dumps({"server": args.name, "id": str(msh(10)), "key": pid3,
                                      "type": str(msh(9)), "t": time.time_ns(),
                                      "size": len(str(message)),
                                      "start_bytes": str(message).count("\x0b")}) + "\n")
                if args.mode == "silent":
                    continue
                if args.mode == "ae":
                    ack = message.create_ack(ack_code="AE")
                elif args.mode == "wrong-msa":
                    ack = message.create_ack()
                    ack.segment("MSA")[2] = "NOT-" + str(msh(10))
                else:
                    ack = message.create_ack()
                writer.writemessage(ack)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await start_hl7_server(handle, "127.0.0.1", args.port, limit=64 * 1024 * 1024, encoding="utf-8")
    print("ready", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    server.close()


asyncio.run(main())
