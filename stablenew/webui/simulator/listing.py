"""The list endpoints (models, samplers, upscalers, ...) served from the inventory."""

from __future__ import annotations

import hashlib
from typing import Any

from fastapi import APIRouter

from stablenew.webui.simulator import scripts
from stablenew.webui.simulator.inventory import MODELS_DIR
from stablenew.webui.simulator.state import SimState

_BUILTIN_UPSCALERS = {"None", "Lanczos", "Nearest"}


def add_list_routes(api: APIRouter, sim: SimState) -> None:
    inv = sim.inventory

    @api.get("/sd-models")
    def sd_models() -> list[dict[str, Any]]:
        return [
            {
                "title": m.title,
                "model_name": m.name,
                "hash": m.hash,
                "sha256": m.full_sha,
                "filename": f"{MODELS_DIR}/Stable-diffusion/{m.file}",
                "config": None,
            }
            for m in inv.models
        ]

    @api.get("/sd-vae")
    def sd_vae() -> list[dict[str, Any]]:
        return [{"model_name": v.name, "filename": f"{MODELS_DIR}/VAE/{v.file}"} for v in inv.vaes]

    @api.get("/samplers")
    def samplers() -> list[dict[str, Any]]:
        return [s.model_dump() for s in inv.samplers]

    @api.get("/schedulers")
    def schedulers() -> list[dict[str, Any]]:
        return [s.model_dump() for s in inv.schedulers]

    @api.get("/upscalers")
    def upscalers() -> list[dict[str, Any]]:
        return [
            {
                "name": u.name,
                "model_name": u.model_name,
                "model_path": None
                if u.name in _BUILTIN_UPSCALERS
                else f"{MODELS_DIR}/ESRGAN/{u.model_name or u.name}.pth",
                "model_url": None,
                "scale": u.scale,
            }
            for u in inv.upscalers
        ]

    @api.get("/latent-upscale-modes")
    def latent_upscale_modes() -> list[dict[str, Any]]:
        return [{"name": name} for name in inv.latent_upscale_modes]

    @api.get("/realesrgan-models")
    def realesrgan_models() -> list[dict[str, Any]]:
        return [
            {"name": u.name, "path": f"{MODELS_DIR}/RealESRGAN/{u.model_name}.pth", "scale": 4}
            for u in inv.upscalers
            if u.name.startswith("R-ESRGAN")
        ]

    @api.get("/hypernetworks")
    def hypernetworks() -> list[dict[str, Any]]:
        return []

    @api.get("/face-restorers")
    def face_restorers() -> list[dict[str, Any]]:
        return [{"name": name, "cmd_dir": None} for name in inv.face_restorers]

    @api.get("/prompt-styles")
    def prompt_styles() -> list[dict[str, Any]]:
        return [s.model_dump() for s in inv.prompt_styles]

    @api.get("/embeddings")
    def embeddings() -> dict[str, Any]:
        loaded = {
            name: {
                "step": None,
                "sd_checkpoint": None,
                "sd_checkpoint_name": None,
                "shape": 768,
                "vectors": 1,
            }
            for name in inv.embeddings
        }
        return {"loaded": loaded, "skipped": {}}

    @api.get("/scripts")
    def scripts_list() -> dict[str, list[str]]:
        return scripts.listing(inv)

    @api.get("/script-info")
    def script_info() -> list[dict[str, Any]]:
        return scripts.script_info(inv)

    @api.get("/extensions")
    def extensions() -> list[dict[str, Any]]:
        return [
            {
                "name": ext.name,
                "remote": ext.remote,
                "branch": ext.branch,
                "commit_hash": hashlib.sha1(ext.name.encode()).hexdigest(),
                "commit_date": 1719792000,
                "version": ext.version,
                "enabled": True,
            }
            for ext in inv.extensions
        ]

    @api.get("/cmd-flags")
    def cmd_flags() -> dict[str, Any]:
        return {
            "api": True,
            "nowebui": True,
            "api_auth": "***" if sim.config.api_auth else None,  # never echo credentials
            "api_log": False,
            "api_server_stop": False,
            "listen": sim.config.host != "127.0.0.1",
            "port": sim.config.port,
            "ckpt_dir": f"{MODELS_DIR}/Stable-diffusion",
            "vae_dir": f"{MODELS_DIR}/VAE",
            "lora_dir": f"{MODELS_DIR}/Lora",
            "skip_torch_cuda_test": False,
            "medvram": False,
            "lowvram": False,
            "xformers": False,
        }

    @api.get("/memory")
    def memory() -> dict[str, Any]:
        gib = 1024**3
        return {
            "ram": {"free": 48 * gib, "used": 16 * gib, "total": 64 * gib},
            "cuda": {
                "system": {"free": 20 * gib, "used": 4 * gib, "total": 24 * gib},
                "active": {"current": 3 * gib, "peak": 6 * gib},
                "allocated": {"current": 3 * gib, "peak": 6 * gib},
                "reserved": {"current": 4 * gib, "peak": 7 * gib},
                "inactive": {"current": 0, "peak": gib},
                "events": {"retries": 0, "oom": 0},
            },
        }


def lora_router(sim: SimState) -> APIRouter:
    """``/loras`` and ``/refresh-loras``: registered by the Lora extension without auth."""
    router = APIRouter(prefix="/sdapi/v1")

    @router.get("/loras")
    async def loras() -> list[dict[str, Any]]:
        return [
            {
                "name": lo.name,
                "alias": lo.alias or lo.name,
                "path": f"{MODELS_DIR}/Lora/{lo.name}.safetensors",
                "metadata": {},
            }
            for lo in sim.inventory.loras
        ]

    @router.post("/refresh-loras")
    async def refresh_loras() -> None:
        return None

    return router
