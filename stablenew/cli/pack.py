"""``stablenew pack ...``: validate, build, count, schema."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, Any

import typer

from stablenew.builder import build_jobs, count_jobs, validate_pack
from stablenew.builder.limits import effective_max_jobs
from stablenew.cli._output import EXIT_FAILED, EXIT_UNAVAILABLE, console, fail, guarded, print_json
from stablenew.cli._pack_arg import PACK_HELP, known_packs, pack_argument
from stablenew.errors import PackError, PackIssue, WebUIError
from stablenew.packs import load_pack, pack_json_schema
from stablenew.records import NormalizedJobRecord
from stablenew.settings import get_settings
from stablenew.webui.preflight import WebUIInventory, build_and_check, fetch_inventory

pack_app = typer.Typer(help="Validate and build prompt packs.", no_args_is_help=True)

PackArg = typer.Argument(..., help=PACK_HELP, callback=pack_argument)
JsonOpt = typer.Option(False, "--json", help="Machine output: one JSON document on stdout.")


def register(root: typer.Typer) -> None:
    root.add_typer(pack_app, name="pack")


@pack_app.command("validate")
@guarded
def validate(
    packs: list[Path] = typer.Argument(..., help=PACK_HELP, callback=pack_argument),
    webui: str | None = typer.Option(
        None,
        "--webui",
        metavar="URL",
        help="Also check checkpoint, VAE, sampler, scheduler, upscaler, LoRA and embedding "
        "names against the lists of the WebUI at URL (http://user:password@host for --api-auth).",
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Check packs completely (limits included); every problem is reported, exit 2 if any."""
    generation = get_settings().generation
    inventory = _inventory(webui) if webui else None
    issues: list[PackIssue] = []
    results: list[dict[str, object]] = []
    for path in packs:
        try:
            jobs = _check(path, inventory, generation)
        except PackError as e:
            issues.extend(e.issues)
            results.append({"path": str(path), "ok": False, "issues": [str(i) for i in e.issues]})
            continue
        results.append({"path": str(path), "ok": True, "jobs": jobs})
        if not as_json:
            checked = f"; names known to {inventory.url}" if inventory else ""
            console.print(f"{path}: ok ({jobs:,} jobs{checked})", highlight=False, soft_wrap=True)
    if as_json:
        print_json(results)
    if issues:
        raise PackError(issues)


def _inventory(url: str) -> WebUIInventory:
    try:
        return fetch_inventory(url)
    except WebUIError as e:
        # Not answering is exit 3, as everywhere; a refusal (e.g. 401) is a failure.
        fail(
            f"--webui: cannot read the WebUI's lists: {e}",
            EXIT_UNAVAILABLE if e.retryable else EXIT_FAILED,
        )


def _check(path: Path, inventory: WebUIInventory | None, generation: Mapping[str, Any]) -> int:
    """Job count of a pack that passes every check; one PackError with all problems if not."""
    if inventory is None:
        return validate_pack(path, generation_defaults=generation)
    return len(build_and_check(path, inventory, generation_defaults=generation))


@pack_app.command("build")
@guarded
def build(
    pack: Path = PackArg,
    out: Path | None = typer.Option(None, "--out", "-o", help="JSONL file; stdout if omitted."),
    as_json: bool = JsonOpt,
) -> None:
    """Build a pack into job records, one JSON record a line (JSONL)."""
    loaded = load_pack(pack)
    records = build_jobs(loaded, generation_defaults=get_settings().generation)
    if out is None:
        _write_jsonl(records, sys.stdout)
        return
    tmp = out.with_name(out.name + ".part")
    with tmp.open("w", encoding="utf-8", newline="\n") as f:
        count = _write_jsonl(records, f)
    tmp.replace(out)
    if as_json:
        print_json({"pack": loaded.spec.pack, "path": str(pack), "out": str(out), "jobs": count})
    else:
        console.print(f"{pack}: wrote {count:,} records to {out}", highlight=False, soft_wrap=True)


def _write_jsonl(records: Iterable[NormalizedJobRecord], stream: IO[str]) -> int:
    written = 0
    for record in records:
        stream.write(record.model_dump_json())
        stream.write("\n")
        written += 1
    return written


@pack_app.command("count")
@guarded
def count(pack: Path = PackArg, as_json: bool = JsonOpt) -> None:
    """How many jobs the pack makes, computed without expanding it (limits not applied;
    ``--json`` shows the job limit that applies)."""
    loaded = load_pack(pack)
    jobs = count_jobs(loaded, generation_defaults=get_settings().generation)
    if as_json:
        limit = effective_max_jobs(loaded.spec.limits.max_jobs, get_settings().limits)
        print_json({"pack": loaded.spec.pack, "path": str(pack), "jobs": jobs, "max_jobs": limit})
    else:
        typer.echo(jobs)


@pack_app.command("ls")
@guarded
def ls(as_json: bool = JsonOpt) -> None:
    """The packs a name reaches: yours (<data dir>/packs) first, then the bundled ones."""
    found = {name: str(path) for name, path in known_packs().items()}
    if as_json:
        print_json(found)
        return
    for name, path in found.items():
        console.print(f"{name}  [dim]{path}[/]", highlight=False, soft_wrap=True)


@pack_app.command("schema")
@guarded
def schema() -> None:
    """Print the JSON Schema of the pack format (for editors' YAML language servers)."""
    typer.echo(json.dumps(pack_json_schema(), indent=2, ensure_ascii=False))
