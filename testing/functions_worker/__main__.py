"""`python -m testing.functions_worker`: build the real worker's venv now (see environment.py)."""

from testing.functions_worker.environment import main

raise SystemExit(main())
