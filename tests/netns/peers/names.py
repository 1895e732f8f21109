"""Ask, from chosen client ports, which server answers: one short connection per port.

  python names.py --to ADDRESS:PORT --ports 42100-42129

For a tests/peers/tcp_server.py started with --bulk 1: it says its name, sends a byte
and closes first, so this side never holds the port in TIME_WAIT and the same client
port can open a new connection at once. Prints one JSON line {"PORT": "NAME", ...}.
"""

import argparse
import json
import socket


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--to", required=True)
    parser.add_argument("--ports", required=True, help="FIRST-LAST client ports")
    args = parser.parse_args()
    host, port = args.to.rsplit(":", 1)
    first, last = (int(value) for value in args.ports.split("-"))
    names = {}
    for client_port in range(first, last + 1):
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.settimeout(5)
            sock.bind(("0.0.0.0", client_port))
            sock.connect((host, int(port)))
            received = b""
            while chunk := sock.recv(4096):
                received += chunk
            names[client_port] = received.split(b"\n", 1)[0].decode()
    print(json.dumps(names), flush=True)


if __name__ == "__main__":
    main()
