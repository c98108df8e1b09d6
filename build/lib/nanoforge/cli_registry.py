"""`nanoforge registry ...` and `nanoforge router ...` (command groups of nanoforge/cli.py), and
`user_errors`, which every command wears."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Optional

import typer

from nanoforge.errors import NanoforgeError


def user_errors(fn):
    """Turn NanoforgeError into `error: ...` on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except NanoforgeError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper


registry_app = typer.Typer(no_args_is_help=True, help="Versions of nanos: add, list, promote, rollback.")
REGISTRY_OPT = typer.Option(Path("registry"), "--registry", help="registry folder")


@registry_app.command("add")
@user_errors
def registry_add(bundle: Path = typer.Argument(..., help="bundle folder"), registry: Path = REGISTRY_OPT,
                 promote: Optional[str] = typer.Option(None, "--promote", help="also point this alias at it")) -> None:
    """Verify a bundle and copy it in as NAME/VERSION."""
    from nanoforge.registry import Registry

    reg = Registry(registry, create=True)
    ref = reg.add(bundle)
    typer.echo(f"added {ref} to {registry}")
    if promote:
        reg.promote(ref.name, ref.version, promote)
        typer.echo(f"{ref.name}@{promote} -> {ref.version}")


@registry_app.command("list")
@user_errors
def registry_list(registry: Path = REGISTRY_OPT,
                  as_json: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """Every version of every nano, its aliases and which one a plain NAME gets."""
    from nanoforge.registry import Registry

    rows = Registry(registry).entries()
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        mark = "*" if r["default"] else " "
        aliases = f"  [{', '.join(r['aliases'])}]" if r["aliases"] else ""
        typer.echo(f"{mark} {r['name']}@{r['version']}  {r['kind']}{aliases}")


@registry_app.command("promote")
@user_errors
def registry_promote(name: str, version: str, registry: Path = REGISTRY_OPT,
                     alias: str = typer.Option("prod", "--alias", help="alias to move")) -> None:
    """Point ALIAS (default prod) at NAME@VERSION; a plain NAME then gets it."""
    from nanoforge.registry import Registry

    ref = Registry(registry).promote(name, version, alias)
    typer.echo(f"{name}@{alias} -> {ref.version}")


@registry_app.command("rollback")
@user_errors
def registry_rollback(name: str, registry: Path = REGISTRY_OPT,
                      alias: str = typer.Option("prod", "--alias", help="alias to move back")) -> None:
    """Point ALIAS back at the version it had before its last promotion."""
    from nanoforge.registry import Registry

    ref = Registry(registry).rollback(name, alias)
    typer.echo(f"{name}@{alias} -> {ref.version}")


router_app = typer.Typer(no_args_is_help=True, help="The router nano that picks a nano when no task is named.")


@router_app.command("build")
@user_errors
def router_build(registry: Path = REGISTRY_OPT,
                 out: Path = typer.Option(Path("runs/router"), "--out", help="run folder to write"),
                 base: str = typer.Option("minilm-l6", "--base", help="student base (or a local HF folder)"),
                 data: list[str] = typer.Option([], "--data", help="NAME=FILE.jsonl: inputs of a nano whose "
                                                "training data is not on this machine (repeatable)"),
                 per_nano: int = typer.Option(2000, "--per-nano", help="most rows per nano and split"),
                 epochs: int = typer.Option(3, "--epochs")) -> None:
    """Train a router nano over the registered nanos' inputs and register it as `router` (prod)."""
    from nanoforge.recipes.router import build_router
    from nanoforge.registry import Registry

    overrides = {}
    for item in data:
        name, sep, file = item.partition("=")
        if not sep or not name or not file:
            raise NanoforgeError(f"--data {item!r}: expected NAME=FILE.jsonl")
        overrides[name] = file
    ref = build_router(Registry(registry), out, base=base, per_nano=per_nano, epochs=epochs, data=overrides)
    typer.echo(f"router nano {ref} registered in {registry} (prod); report: {out / 'report.md'}")
