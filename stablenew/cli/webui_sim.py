"""``stablenew webui-sim``: serve the bundled A1111-compatible simulator."""

from __future__ import annotations

from pathlib import Path

import typer

from stablenew.cli._output import EXIT_BAD_INPUT, fail, guarded


def _env(name: str) -> str:
    return f"STABLENEW_SIM_{name}"


@guarded
def webui_sim(
    host: str = typer.Option("127.0.0.1", help="Bind address (loopback by default)."),
    port: int = typer.Option(7860, help="Port; 0 picks a free one and prints it."),
    api_auth: str | None = typer.Option(
        None, "--api-auth", envvar=_env("API_AUTH"), help="Basic auth 'user:pass[,u2:p2]'."
    ),
    inventory: Path | None = typer.Option(
        None, exists=True, dir_okay=False, help="YAML/JSON inventory overriding the default."
    ),
    seconds_per_step: float = typer.Option(0.01, min=0, help="Seconds per sampling step."),
    seconds_per_image: float = typer.Option(0.0, min=0, help="Fixed seconds per image."),
    seconds_per_megapixel: float = typer.Option(0.0, min=0, help="Seconds per megapixel."),
    model_switch_seconds: float = typer.Option(0.0, min=0, help="Checkpoint switch delay."),
    startup_seconds: float = typer.Option(0.0, min=0, help="Delay before accepting calls."),
    fail_nth: list[int] = typer.Option(
        [], "--fail-nth", envvar=_env("FAIL_NTH"), help="Answer processing request N with 500."
    ),
    oom_rate: float = typer.Option(
        0.0, min=0, max=1, envvar=_env("OOM_RATE"), help="Chance of a CUDA OOM 500."
    ),
    hang_seconds: float = typer.Option(
        0.0, min=0, envvar=_env("HANG_SECONDS"), help="Hold each processing request T s."
    ),
    drop_rate: float = typer.Option(
        0.0, min=0, max=1, envvar=_env("DROP_RATE"), help="Chance of dropping a response."
    ),
    seed: int | None = typer.Option(None, help="Seed of the simulator's random source."),
) -> None:
    """Serve an AUTOMATIC1111-compatible WebUI simulator (Ctrl-C stops it)."""
    from pydantic import ValidationError

    from stablenew.webui.simulator import FaultConfig, SimConfig, TimingConfig, serve

    try:
        config = SimConfig(
            host=host,
            port=port,
            api_auth=api_auth,
            inventory_file=inventory,
            seed=seed,
            timing=TimingConfig(
                seconds_per_step=seconds_per_step,
                seconds_per_image=seconds_per_image,
                seconds_per_megapixel=seconds_per_megapixel,
                model_switch_seconds=model_switch_seconds,
                startup_seconds=startup_seconds,
            ),
            faults=FaultConfig(
                fail_nth=fail_nth, oom_rate=oom_rate, hang_seconds=hang_seconds, drop_rate=drop_rate
            ),
        )
    except ValidationError as e:
        # Field names and messages only: never the input values (credentials).
        problems = "; ".join(
            f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors()
        )
        fail(problems, EXIT_BAD_INPUT)

    def announce(url: str) -> None:
        typer.echo(f"Simulator listening on {url}")

    try:
        serve(config, on_bound=announce)
    except OSError as e:
        fail(f"cannot listen on {host}:{port}: {e.strerror}", EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        pass


def register(root: typer.Typer) -> None:
    """Adds the ``webui-sim`` command."""
    root.command("webui-sim")(webui_sim)
