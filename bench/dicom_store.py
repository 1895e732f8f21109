"""DICOM through medlb against direct, on loopback: C-STORE throughput and the
association set-up latency medlb adds.

    .venv/bin/python bench/dicom_store.py [--count 500] [--pairs 9] [--latency 300]

- Throughput: dcmtk storescu sends COUNT copies of pydicom's CT_small.dcm (each with a
  new SOP Instance UID, written to a temporary folder) in one association to dcmtk
  storescp (--ignore: received, not written, so the disk does not blur the
  comparison), directly (A), through a medlb dicom service (B) and, for reference,
  through a medlb tcp service (C), in rounds of the three in rotating order (A B C,
  B C A, ...) for PAIRS rounds. Reported: each run, and the median of the per-round
  ratios B/A (and C/A) of instances per second.
- dcmtk (Debian's 3.6.7) keeps Nagle's algorithm on unless TCP_NODELAY=1 is in its
  environment; with it on, a C-STORE waits on delayed ACKs (~90 ms per instance on
  loopback, direct or not). Both tools run with TCP_NODELAY=1 so that the figures
  show medlb, not Nagle.
- Set-up latency: a minimal raw client (A-ASSOCIATE-RQ for Verification, wait for the
  AC, A-RELEASE-RQ, wait for the RP, close) LATENCY times each way, interleaved.
  Reported: p50 and p99, direct and through medlb (dicom, and tcp for reference), and
  the difference. A raw client,
  because echoscu's process start (~10 ms) and pynetdicom's polling reactor would
  swamp what is measured.

Bounded: --max-seconds (default 100) stops starting new pairs; everything runs on
127.0.0.1 and stops what it started. Writes bench/results/dicom.md (or --output) and,
with --json, prints the figures as JSON. Not part of `make test`; a small test runs
it with tiny counts to keep it working.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as `python bench/dicom_store.py`: make `bench` importable

from bench.common import LOOPBACK, free_ports  # noqa: E402
TOKEN = "bench-admin-token-0123456789"

# pynetdicom's byte-exact A-ASSOCIATE-RQ for Verification (its test vector).
from pynetdicom.tests.encoded_pdu_items import a_associate_rq as VERIFICATION_RQ  # noqa: E402

from medlb.protocols.dicom import A_RELEASE_RQ_BYTES, HEADER_SIZE, pdu_header  # noqa: E402

#: dcmtk reads this: disable Nagle's algorithm on its sockets.
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


def wait_for(predicate: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def make_instances(folder: Path, count: int) -> tuple[list[Path], int]:
    """COUNT copies of CT_small.dcm, each with its own SOP Instance UID."""
    from pydicom import dcmread
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    source = dcmread(get_testdata_file("CT_small.dcm", download=False))
    paths = []
    for index in range(count):
        uid = generate_uid()
        source.SOPInstanceUID = uid
        source.file_meta.MediaStorageSOPInstanceUID = uid
        path = folder / f"ct{index:05d}.dcm"
        source.save_as(path)
        paths.append(path)
    return paths, sum(path.stat().st_size for path in paths)


def read_pdu(sock: socket.socket) -> int:
    """Read one whole PDU; its type."""
    def exactly(size: int) -> bytes:
        data = b""
        while len(data) < size:
            piece = sock.recv(size - len(data))
            if not piece:
                raise ConnectionError("closed mid-PDU")
            data += piece
        return data

    pdu_type, length = pdu_header(exactly(HEADER_SIZE))
    exactly(length)
    return pdu_type


def associate_release(port: int) -> float:
    started = time.perf_counter()
    with socket.create_connection((LOOPBACK, port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(VERIFICATION_RQ)
        if read_pdu(sock) != 0x02:
            raise RuntimeError("the association was not accepted")
        sock.sendall(A_RELEASE_RQ_BYTES)
        if read_pdu(sock) != 0x06:
            raise RuntimeError("the release was not confirmed")
    return time.perf_counter() - started


def store(port: int, files: list[Path]) -> float:
    """Seconds for storescu to send every file in one association."""
    started = time.perf_counter()
    result = subprocess.run(["storescu", "-aet", "BENCH", "-aec", "STORESCP", "-to", "30", "-ta", "30",
                             LOOPBACK, str(port), *map(str, files)],
                            capture_output=True, text=True, timeout=600, env=DCMTK_ENV)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"storescu failed: {result.stderr.strip()[:500]}")
    return elapsed


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]


class Processes:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, args: list[str], log: Path, **kwargs: Any) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(args, stdout=open(log, "wb"), stderr=subprocess.STDOUT, **kwargs)
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def run(count: int, pairs: int, latency_samples: int, max_seconds: float, workdir: Path) -> dict[str, Any]:
    for tool in ("storescu", "storescp"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (scripts/system-deps.sh installs dcmtk)")
    began = time.monotonic()
    data = workdir / "instances"
    data.mkdir()
    files, total_bytes = make_instances(data, count)
    processes = Processes()
    try:
        scp_port, vip, vip_tcp, admin = free_ports(4)
        processes.start(["storescp", "--ignore", "-aet", "STORESCP", str(scp_port)], workdir / "storescp.log",
                        env=DCMTK_ENV)
        config = {
            "admin": {"listen": f"{LOOPBACK}:{admin}", "token": TOKEN, "tls": "off"},
            "state_dir": str(workdir / "state"),
            "log": {"level": "warning"},
            "workers": 1,  # one process, as the direct connection is one storescp
            "services": [
                {"name": "pacs", "mode": "dicom", "listen": [f"{LOOPBACK}:{vip}"], "health": {"type": "none"},
                 "servers": [{"name": "scp", "address": f"{LOOPBACK}:{scp_port}", "ae_title": "STORESCP"}]},
                # The same server through the protocol-blind tcp relay: what the DICOM layer costs.
                {"name": "pacs-tcp", "mode": "tcp", "listen": [f"{LOOPBACK}:{vip_tcp}"], "health": {"type": "none"},
                 "servers": [{"name": "scp", "address": f"{LOOPBACK}:{scp_port}"}]},
            ],
        }
        config_path = workdir / "medlb.yaml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        medlb = processes.start([sys.executable, "-m", "medlb", "run", "-c", str(config_path)], workdir / "medlb.log",
                                cwd=workdir)

        def medlb_ready() -> bool:
            if medlb.poll() is not None:
                raise RuntimeError(f"medlb exited: {(workdir / 'medlb.log').read_text()[-2000:]}")
            try:
                return httpx.get(f"http://{LOOPBACK}:{admin}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(medlb_ready, 20, "medlb")
        wait_for(lambda: _accepts(scp_port), 20, "storescp")

        targets = {"direct": scp_port, "medlb": vip, "tcp": vip_tcp}
        # Warm-up: one small store each way (page cache, first-use costs in medlb).
        for port in targets.values():
            store(port, files[:10])

        runs: list[dict[str, float]] = []
        for index in range(pairs):
            if runs and time.monotonic() - began > max_seconds:
                break
            order = list(targets)[index % 3:] + list(targets)[:index % 3]  # no target always first
            seconds = {name: store(targets[name], files) for name in order}
            runs.append({"direct_s": seconds["direct"], "medlb_s": seconds["medlb"], "tcp_s": seconds["tcp"],
                         "direct_per_s": count / seconds["direct"], "medlb_per_s": count / seconds["medlb"],
                         "ratio": seconds["direct"] / seconds["medlb"], "tcp_ratio": seconds["direct"] / seconds["tcp"]})

        latencies: dict[str, list[float]] = {name: [] for name in targets}
        for _ in range(latency_samples):
            if time.monotonic() - began > max_seconds * 1.15:
                break
            for name, port in targets.items():
                latencies[name].append(associate_release(port))
    finally:
        processes.stop()

    def ms(value: float) -> float:
        return round(value * 1000, 3)

    direct_lat, medlb_lat, tcp_lat = latencies["direct"], latencies["medlb"], latencies["tcp"]
    return {
        "count": count,
        "bytes": total_bytes,
        "pairs": runs,
        "median_ratio": round(statistics.median(r["ratio"] for r in runs), 4),
        "median_tcp_ratio": round(statistics.median(r["tcp_ratio"] for r in runs), 4),
        "latency": {
            "samples": len(direct_lat),
            "direct_p50_ms": ms(percentile(direct_lat, 0.5)), "direct_p99_ms": ms(percentile(direct_lat, 0.99)),
            "medlb_p50_ms": ms(percentile(medlb_lat, 0.5)), "medlb_p99_ms": ms(percentile(medlb_lat, 0.99)),
            "tcp_p50_ms": ms(percentile(tcp_lat, 0.5)), "tcp_p99_ms": ms(percentile(tcp_lat, 0.99)),
            "added_p50_ms": ms(percentile(medlb_lat, 0.5) - percentile(direct_lat, 0.5)),
            "added_p99_ms": ms(percentile(medlb_lat, 0.99) - percentile(direct_lat, 0.99)),
        },
        "seconds": round(time.monotonic() - began, 1),
        "load": " ".join(f"{value:.2f}" for value in os.getloadavg()),
    }


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=1):
            return True
    except OSError:
        return False


def report(result: dict[str, Any], command: str) -> str:
    mib = result["bytes"] / (1 << 20)
    lines = [
        "# DICOM: C-STORE through medlb against direct",
        "",
        f"Command: `{command}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{_dcmtk_version()}, loopback. Run took {result['seconds']} s; load average at the end "
        f"{result['load']} (other work on the machine makes the figures noisier).",
        "",
        f"## Throughput: {result['count']} instances ({mib:.1f} MiB) in one association, storescu -> storescp --ignore",
        "",
        "Each round runs the three targets in a rotating order: direct to storescp, through a",
        "medlb `dicom` service, and (for reference) through a medlb `tcp` service to the same",
        "storescp, which shows what the DICOM layer costs on top of the relay.",
        "",
        "| round | direct s | dicom s | tcp s | direct inst/s | dicom inst/s | dicom / direct | tcp / direct |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for index, run in enumerate(result["pairs"], 1):
        lines.append(f"| {index} | {run['direct_s']:.3f} | {run['medlb_s']:.3f} | {run['tcp_s']:.3f} | "
                     f"{run['direct_per_s']:.0f} | {run['medlb_per_s']:.0f} | {run['ratio']:.3f} | "
                     f"{run['tcp_ratio']:.3f} |")
    latency = result["latency"]
    lines += [
        "",
        f"**Median throughput ratio (medlb dicom / direct): {result['median_ratio']:.3f}** "
        f"(medlb tcp / direct: {result['median_tcp_ratio']:.3f})",
        "",
        f"## Association set-up: A-ASSOCIATE-RQ -> AC, A-RELEASE-RQ -> RP ({latency['samples']} each, interleaved)",
        "",
        "| | p50 ms | p99 ms |",
        "|---|---|---|",
        f"| direct | {latency['direct_p50_ms']} | {latency['direct_p99_ms']} |",
        f"| through medlb (dicom) | {latency['medlb_p50_ms']} | {latency['medlb_p99_ms']} |",
        f"| through medlb (tcp, reference) | {latency['tcp_p50_ms']} | {latency['tcp_p99_ms']} |",
        f"| **added by medlb (dicom)** | **{latency['added_p50_ms']}** | **{latency['added_p99_ms']}** |",
        "",
        "Through medlb an association costs a second TCP connect (medlb to the server), the",
        "request's parse and routing, and the AC's called-AE restore. The dicom mode connects",
        "only once it has read the request (it must know the AE titles first), where the tcp",
        "relay connects while the client is still sending; that is most of the difference",
        "between the two. The throughput rounds show the cost of relaying P-DATA: one extra",
        "copy through user space per direction, by a third process on the same CPUs.",
        "",
    ]
    return "\n".join(lines)


def _dcmtk_version() -> str:
    try:
        first = subprocess.run(["storescu", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
        return first.strip("$ ").replace("dcmtk: ", "dcmtk ")
    except (OSError, IndexError):
        return "dcmtk"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=500, help="instances per store run (default 500)")
    parser.add_argument("--pairs", type=int, default=9, help="rounds of store runs (default 9)")
    parser.add_argument("--latency", type=int, default=300, help="associate+release samples each way")
    parser.add_argument("--max-seconds", type=float, default=100.0, help="stop starting new runs after this")
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "dicom.md"))
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="medlb-bench-") as folder:
        result = run(args.count, args.pairs, args.latency, args.max_seconds, Path(folder))
    command = "python bench/dicom_store.py " + " ".join(sys.argv[1:])
    text = report(result, command.strip())
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    print(json.dumps(result, indent=2) if args.json else text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
