from l2pop.cli.main import main

raise SystemExit(main())
