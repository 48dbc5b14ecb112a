"""Tags a render run gains when something happened to it that its timestamps do not show.

They are visible in the Prefect UI's run list, and tell the history exporter which runs' state
histories to read (see ``exporter``): reading every run's would cost a request per job.
"""

from __future__ import annotations

REQUEUED = "requeued"  # went back to its queue: its worker stopped or died before it finished
WAITED = "waited-for-webui"  # waited for its WebUI to come back during the run

NOTEWORTHY = frozenset({REQUEUED, WAITED})
