"""``/stablenew-sim/v1``: the simulator's own control and observability API (not A1111's).

* ``GET  /stats``  → ``{events: [{kind, start, end, model, steps, interrupted, prompt, images}],
  counters: {requests, interrupts, skips, model_switches, faults}, queued, busy, loaded_model}``;
  ``start``/``end`` are ``time.time()`` floats of the lock-holding job.
* ``GET|POST /faults`` → the fault config; POST merges the given fields (``FaultConfig``).
* ``GET|POST /timing`` → the timing config; POST merges the given fields (``TimingConfig``).
* ``POST /reset`` → back to the configured state: stats, counters, faults, timing, options,
  loaded model; wakes hung jobs. Answers ``{}``.

None of these need auth, so tests can reset a simulator that rejects every credential.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from stablenew.webui.simulator.state import SimState

PREFIX = "/stablenew-sim/v1"


def control_router(sim: SimState) -> APIRouter:
    router = APIRouter(prefix=PREFIX)

    @router.get("/stats")
    def stats() -> dict[str, Any]:
        return sim.stats()

    _config_routes(router, "faults", lambda: sim.faults, sim.update_faults)
    _config_routes(router, "timing", lambda: sim.timing, sim.update_timing)

    @router.post("/reset")
    def reset() -> dict[str, Any]:
        sim.reset()
        return {}

    return router


def _config_routes(
    router: APIRouter,
    name: str,
    current: Callable[[], BaseModel],
    update: Callable[[dict[str, Any]], BaseModel],
) -> None:
    """``GET /<name>`` shows a config; ``POST /<name>`` merges fields into it (422 if invalid)."""

    @router.get(f"/{name}")
    def show() -> dict[str, Any]:
        return current().model_dump()

    @router.post(f"/{name}", response_model=None)
    def change(changes: dict[str, Any]) -> dict[str, Any] | JSONResponse:
        try:
            return update(changes).model_dump()
        except ValidationError as e:
            return JSONResponse(status_code=422, content={"detail": json.loads(e.json())})
