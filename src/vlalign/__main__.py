from vlalign.cli import main

raise SystemExit(main())
