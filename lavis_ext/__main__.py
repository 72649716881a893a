from lavis_ext.cli import main

raise SystemExit(main())
