"""What every script runner starts from: the request's job (:class:`Context`) and the helpers
that assemble several ``process_images`` calls into one answer."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from PIL import Image

from stablenew.webui.simulator.processing import Batch, Request, process
from stablenew.webui.simulator.state import SimState

Runner = Callable[["Context", list[Any]], Batch]


class Context:
    """One request's job: what every ``process_images`` call of a script starts from."""

    def __init__(
        self,
        state: SimState,
        kind: str,
        req: Request,
        inits: list[Image.Image],
        opts: dict[str, Any],
        mask: Image.Image | None,
        extra: dict[str, Any],
    ) -> None:
        self.state, self.kind, self.req, self.inits = state, kind, req, inits
        self.opts, self.mask, self.extra = opts, mask, extra

    def run(
        self,
        changes: Mapping[str, Any] | None = None,
        *,
        inits: list[Image.Image] | None = None,
        opts: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Batch:
        """``process_images`` on a copy of the request with ``changes`` applied."""
        req = type(self.req).model_validate({**self.req.model_dump(), **(changes or {})})
        return process(
            self.state,
            self.kind,
            req,
            self.inits if inits is None else inits,
            self.opts if opts is None else opts,
            mask=self.mask,
            extra_params={**self.extra, **(extra or {})},
        )

    def fixed_seed(self) -> int:
        seed = int(self.req.value("seed"))
        return seed if seed != -1 else self.state.random_seed()


def arg(args: list[Any], i: int, default: Any) -> Any:
    return args[i] if i < len(args) and args[i] is not None else default


def merge(batches: list[Batch], images: list[Image.Image], infotexts: list[str]) -> Batch:
    """One answer from several ``process_images`` calls (info of the first, lists of all)."""
    info = dict(batches[0].info)
    for key in ("all_prompts", "all_negative_prompts", "all_seeds", "all_subseeds"):
        info[key] = [v for b in batches for v in b.info.get(key, [])]
    info["infotexts"] = infotexts
    return Batch(images, infotexts, info, any(b.interrupted for b in batches))
