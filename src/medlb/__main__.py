from medlb.cli import main

raise SystemExit(main())
