import sys

if sys.argv[1:2] == ["ha-alive"]:  # keepalived's track script: answered before the rest of medlb loads
    from medlb.ha.alive import main as alive

    raise SystemExit(alive(sys.argv[2:]))

from medlb.cli import main  # noqa: E402

raise SystemExit(main())
