"""Check a record against what the WebUI actually has, before spending GPU time on it.

A1111 1.10 silently falls back to ``DPM++ 2M`` for an unknown sampler and keeps (or loads
another) checkpoint for an unknown model, so a typo would render the wrong images and report
success. Checking names against the WebUI's own lists turns that into a fast, precise failure.
"""

from __future__ import annotations

from dataclasses import dataclass

from stablenew.errors import WebUIRequestRejected
from stablenew.records import NormalizedJobRecord
from stablenew.webui.client import WebUIClient


@dataclass(frozen=True, slots=True)
class WebUIInventory:
    """Names the WebUI accepts, as it lists them (lower-cased for matching)."""

    models: frozenset[str]
    samplers: frozenset[str]
    schedulers: frozenset[str]
    upscalers: frozenset[str]
    vaes: frozenset[str]
    loras: frozenset[str]

    @classmethod
    def fetch(cls, client: WebUIClient) -> WebUIInventory:
        models: set[str] = set()
        for m in client.sd_models():
            title = str(m.get("title") or "")
            models.update(
                {
                    title,
                    title.split(" [")[0],
                    str(m.get("model_name") or ""),
                    str(m.get("hash") or ""),
                }
            )
        samplers = {str(s.get("name")) for s in client.samplers()}
        for s in client.samplers():
            samplers.update(str(a) for a in (s.get("aliases") or []))
        schedulers: set[str] = set()
        for s in client.schedulers():
            schedulers.update({str(s.get("name") or ""), str(s.get("label") or "")})
        upscalers = {str(u.get("name")) for u in client.upscalers()}
        vaes = {"automatic", "none"}
        for v in client.sd_vae():
            vaes.update({str(v.get("model_name") or ""), str(v.get("filename") or "")})
        loras: set[str] = set()
        for lora in client.loras():
            loras.update({str(lora.get("name") or ""), str(lora.get("alias") or "")})

        def norm(values: set[str]) -> frozenset[str]:
            return frozenset(v.lower() for v in values if v)

        return cls(
            norm(models), norm(samplers), norm(schedulers), norm(upscalers), norm(vaes), norm(loras)
        )

    def _sampler_known(self, name: str) -> bool:
        low = name.lower()
        if low in self.samplers:
            return True
        # "DPM++ 2M Karras": A1111 splits a trailing scheduler label off the sampler name.
        head, _, tail = low.rpartition(" ")
        return bool(head) and head in self.samplers and tail in self.schedulers

    def problems(self, record: NormalizedJobRecord) -> list[tuple[str, str]]:
        """(field, message) for every name in ``record`` the WebUI does not know."""
        found: list[tuple[str, str]] = []
        if record.model.lower() not in self.models:
            found.append(("model", f"checkpoint {record.model!r} is not on the WebUI"))
        if record.vae and record.vae.lower() not in self.vaes:
            found.append(("vae", f"VAE {record.vae!r} is not on the WebUI"))
        for lora in record.loras:
            if lora.name.lower() not in self.loras:
                found.append(("loras", f"LoRA {lora.name!r} is not on the WebUI"))
        for i, stage in enumerate(record.stages):
            if stage.sampler and not self._sampler_known(stage.sampler):
                found.append((f"stages[{i}].sampler", f"sampler {stage.sampler!r} is unknown"))
            if stage.scheduler and stage.scheduler.lower() not in self.schedulers:
                found.append(
                    (f"stages[{i}].scheduler", f"scheduler {stage.scheduler!r} is unknown")
                )
            if stage.upscaler and stage.upscaler.lower() not in self.upscalers:
                found.append((f"stages[{i}].upscaler", f"upscaler {stage.upscaler!r} is unknown"))
        return found


def check_record(
    client: WebUIClient, record: NormalizedJobRecord, inventory: WebUIInventory
) -> None:
    """Raise :class:`WebUIRequestRejected` (not retryable) naming every unknown name."""
    problems = inventory.problems(record)
    if problems:
        raise WebUIRequestRejected(
            "; ".join(f"{field}: {message}" for field, message in problems),
            field=problems[0][0],
            url=client.base_url,
            status=None,
        )
