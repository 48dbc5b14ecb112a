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
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from stablenew.webui.simulator.state import SimState

PREFIX = "/stablenew-sim/v1"


def _invalid(e: ValidationError) -> JSONResponse:
    return JSONResponse(status_code=422, content={"detail": json.loads(e.json())})


def control_router(sim: SimState) -> APIRouter:
    router = APIRouter(prefix=PREFIX)

    @router.get("/stats")
    def stats() -> dict[str, Any]:
        return sim.stats()

    @router.get("/faults")
    def get_faults() -> dict[str, Any]:
        with sim.mutex:
            return sim.faults.model_dump()

    @router.post("/faults", response_model=None)
    def set_faults(changes: dict[str, Any]) -> dict[str, Any] | JSONResponse:
        try:
            return sim.update_faults(changes).model_dump()
        except ValidationError as e:
            return _invalid(e)

    @router.get("/timing")
    def get_timing() -> dict[str, Any]:
        with sim.mutex:
            return sim.timing.model_dump()

    @router.post("/timing", response_model=None)
    def set_timing(changes: dict[str, Any]) -> dict[str, Any] | JSONResponse:
        try:
            return sim.update_timing(changes).model_dump()
        except ValidationError as e:
            return _invalid(e)

    @router.post("/reset")
    def reset() -> dict[str, Any]:
        sim.reset()
        return {}

    return router
