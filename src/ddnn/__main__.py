from ddnn.cli import main

raise SystemExit(main())
