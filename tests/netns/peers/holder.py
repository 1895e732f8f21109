"""A client that holds TCP connections open, from chosen source ports, and checks them.

  python holder.py --to ADDRESS:PORT --ports 40000-40029

It opens one connection per source port to a tests/peers/tcp_server.py (which says its
name on connect, then echoes), and prints one JSON line: {"PORT": "NAME", ...}. Then,
for each line `echo` on stdin, it sends a line on every connection and prints
{"PORT": "ok" | "reset" | "closed" | "timeout" | "wrong echo"}; `quit` ends it. A
connection that a table change sent to another server is reset by that server, so
"ok" on all of them means every established flow still reaches its own server.
"""

import argparse
import json
import socket
import sys


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--to", required=True)
    parser.add_argument("--ports", required=True, help="FIRST-LAST source ports")
    parser.add_argument("--timeout", type=float, default=3.0)
    args = parser.parse_args()
    host, port = args.to.rsplit(":", 1)
    first, last = (int(value) for value in args.ports.split("-"))
    connections: dict[int, socket.socket] = {}
    names: dict[int, str] = {}
    for source_port in range(first, last + 1):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.settimeout(args.timeout)
        sock.bind(("0.0.0.0", source_port))
        sock.connect((host, int(port)))
        names[source_port] = sock.makefile("rb").readline().decode().strip()
        connections[source_port] = sock
    print(json.dumps(names), flush=True)
    for command in sys.stdin:
        if command.strip() != "echo":
            break
        results = {}
        for source_port, sock in connections.items():
            try:
                sock.sendall(b"still here\n")
                reply = sock.recv(64)
                results[source_port] = "ok" if reply == b"still here\n" else ("closed" if not reply else "wrong echo")
            except ConnectionResetError:
                results[source_port] = "reset"
            except TimeoutError:
                results[source_port] = "timeout"
            except OSError as error:
                results[source_port] = f"error {error.errno}"
        print(json.dumps(results), flush=True)
    for sock in connections.values():
        sock.close()


if __name__ == "__main__":
    main()
