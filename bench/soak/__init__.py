"""`make soak`: one medlb, every layer 7 mode at once, real peers, chaos, for a bounded time.

  python -m bench.soak [--seconds 600] [--chaos-every 4] [--out bench/results]

One medlb (workers: 2) runs a `tcp`, a `dicom`, an `mllp` and an `http` service, each in
front of three real servers (tests/peers, dcmtk storescp, pynetdicom). Clients keep a
steady load on every service while a chaos loop kills servers with SIGKILL and starts
them again, halts, drains and onlines them through the API, and reloads medlb (SIGHUP
or POST /api/v1/reload) with alternating valid configs and, now and then, one that must
be refused. At the end it writes bench/results/soak.md and soak.json and exits 1 if a
must was broken (it says which), 2 if the harness itself could not run.

Everything talks to 127.0.0.1 only; every loop is bounded in count and in time, and a
watchdog ends the run if anything hangs. Not part of `make test`; a 20 s run in
tests/integration/test_soak_harness.py keeps the harness working.

Modules: `estate` (peers and medlb), `load` (the clients and what they saw), `chaos`
(the disruptions), `watch` (health timeline and RSS), `verdict` (pure: classify, judge,
render), `run` (wires them and bounds the whole).
"""
