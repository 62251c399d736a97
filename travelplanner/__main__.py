"""python -m travelplanner: the standalone host (README "Quick start")."""

import sys

from travelplanner.standalone import main

sys.exit(main())
