from bench.soak.runner import main

raise SystemExit(main())
