"""TravelPlanner: the application on top of the streaming core.

Settings, the wiring both hosts share, the agent and its models, the recorder
that writes every run to the run log, the durable backends, the standalone
host, the embedded Redis and the web page. `function_app.py` (Azure
Functions) and `python -m travelplanner` (the standalone host) are its entry points.
"""

from pathlib import Path

PAGE = Path(__file__).parent / "static" / "index.html"
