from testbed_lib.cli import main

raise SystemExit(main())
