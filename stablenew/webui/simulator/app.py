"""``create_app``: the FastAPI application that answers like A1111 1.10 under ``--api --nowebui``
for the subset in reference §9, plus the ``/stablenew-sim/v1`` control API (``control.py``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import JSONResponse, Response, StreamingResponse

from stablenew.webui.simulator import engine, render
from stablenew.webui.simulator._http import (
    A1111Middleware,
    check_auth,
    dropping_body,
    install_error_handlers,
)
from stablenew.webui.simulator.config import SimConfig
from stablenew.webui.simulator.control import control_router
from stablenew.webui.simulator.infotext import parse_generation_parameters
from stablenew.webui.simulator.inventory import load_inventory
from stablenew.webui.simulator.listing import add_list_routes, lora_router
from stablenew.webui.simulator.schemas import (
    ExtrasBatchRequest,
    ExtrasSingleRequest,
    Img2ImgRequest,
    PNGInfoRequest,
    Txt2ImgRequest,
)
from stablenew.webui.simulator.state import Faults, SimState


def create_app(config: SimConfig, *, state: SimState | None = None) -> FastAPI:
    """A fresh simulator app; its :class:`SimState` is ``app.state.sim``."""
    sim = state or SimState(config, load_inventory(config.inventory_file))
    app = FastAPI(title="StableNew WebUI simulator (A1111 1.10 API)", version="1.10.1")
    app.state.sim = sim
    install_error_handlers(app)
    app.add_middleware(GZipMiddleware, minimum_size=1000)
    app.add_middleware(A1111Middleware)

    def auth(request: Request) -> None:
        check_auth(sim, request.headers.get("authorization"))

    api = APIRouter(prefix="/sdapi/v1", dependencies=[Depends(auth)])
    _processing_routes(api, sim)
    _control_routes(api, sim)
    add_list_routes(api, sim)
    app.include_router(api)
    app.include_router(lora_router(sim))  # registered with plain app.get: no auth
    app.include_router(control_router(sim))
    return app


def _respond(body: dict[str, Any], faults: Faults) -> Response:
    if faults.drop:
        return StreamingResponse(dropping_body(body), media_type="application/json")
    return JSONResponse(body)


def _run(sim: SimState, work: Callable[[Faults], dict[str, Any]]) -> Response:
    """Count the request, decide its faults, and run it under the FIFO lock."""
    faults = sim.next_faults()
    if faults.reject:
        # FastAPI's own validation shape (not A1111's wrapper), as for a real 422.
        return JSONResponse(
            status_code=422,
            content={
                "detail": [
                    {
                        "loc": ["body", "sampler_name"],
                        "msg": "simulated rejection",
                        "type": "value_error",
                    }
                ]
            },
        )
    with sim.lock:
        body = work(faults)
    return _respond(body, faults)


def _processing_routes(api: APIRouter, sim: SimState) -> None:
    @api.post("/txt2img")
    def txt2img(req: Txt2ImgRequest) -> Response:
        engine.check_scripts(sim, "txt2img", req)
        return _run(sim, lambda f: engine.generate(sim, "txt2img", req, [], f))

    @api.post("/img2img")
    def img2img(req: Img2ImgRequest) -> Response:
        if req.init_images is None:
            raise HTTPException(status_code=404, detail="Init image not found")
        engine.check_scripts(sim, "img2img", req)
        inits = engine.decode_inputs(req.init_images)
        mask = engine.decode_inputs([req.mask])[0] if req.mask else None
        return _run(sim, lambda f: engine.generate(sim, "img2img", req, inits, f, mask=mask))

    @api.post("/extra-single-image")
    def extra_single_image(req: ExtrasSingleRequest) -> Response:
        images = engine.decode_inputs([req.image or ""])

        def work(f: Faults) -> dict[str, Any]:
            out, html = engine.run_extras(sim, req, images, f)
            return {"html_info": html, "image": out[0]}

        return _run(sim, work)

    @api.post("/extra-batch-images")
    def extra_batch_images(req: ExtrasBatchRequest) -> Response:
        images = engine.decode_inputs([item.data for item in req.imageList])

        def work(f: Faults) -> dict[str, Any]:
            out, html = engine.run_extras(sim, req, images, f)
            return {"html_info": html, "images": out}

        return _run(sim, work)

    @api.post("/png-info")
    def png_info(req: PNGInfoRequest) -> dict[str, Any]:
        if not req.image.strip():
            return {"info": "", "items": {}, "parameters": {}}
        img = engine.decode_inputs([req.image.strip()])[0]
        items = render.text_chunks(img)
        info = items.pop("parameters", "")
        return {"info": info, "items": items, "parameters": parse_generation_parameters(info)}


def _control_routes(api: APIRouter, sim: SimState) -> None:
    @api.get("/progress")
    async def progress(skip_current_image: bool = False) -> dict[str, Any]:
        return sim.progress(skip_current_image)

    @api.post("/interrupt")
    async def interrupt() -> dict[str, Any]:
        sim.interrupt()
        return {}

    @api.post("/skip")
    async def skip() -> None:
        sim.skip()

    @api.get("/options")
    def get_options() -> dict[str, Any]:
        with sim.mutex:
            return dict(sim.options)

    @api.post("/options")
    def set_options(req: dict[str, Any]) -> None:
        name = req.get("sd_model_checkpoint")
        checkpoint = sim.inventory.checkpoint(name) if name is not None else None
        if name is not None and checkpoint is None:
            raise RuntimeError(f"model {name!r} not found")
        with sim.mutex:
            sim.options.update({k: v for k, v in req.items() if k != "sd_model_checkpoint"})
        if checkpoint is not None:
            with sim.lock:  # A1111 loads checkpoints under the generation lock
                sim.load_model(checkpoint)

    @api.post("/refresh-checkpoints")
    def refresh_checkpoints() -> None:
        with sim.lock:
            return None

    @api.post("/refresh-vae")
    def refresh_vae() -> None:
        with sim.lock:
            return None

    @api.post("/refresh-embeddings")
    def refresh_embeddings() -> None:
        with sim.lock:
            return None

    @api.post("/unload-checkpoint")
    def unload_checkpoint() -> dict[str, Any]:
        return {}

    @api.post("/reload-checkpoint")
    def reload_checkpoint() -> dict[str, Any]:
        return {}
