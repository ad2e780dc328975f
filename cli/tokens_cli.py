"""``dre token create|list|revoke``: bearer tokens for the node's HTTP API (writes need one)."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import click
from dre.protocol.errors import ValidationError
from dre.storage.repo import Repo
from dre.storage.tokens import RIGHTS, TokenInfo, TokenStore

from .output import emit_json, json_option

if TYPE_CHECKING:
    from .main import Context

__all__ = ["parse_expiry", "register"]

_DURATION_RE = re.compile(r"([1-9][0-9]{0,5})([hdw])")
_UNIT_SECONDS = {"h": 3600, "d": 86400, "w": 7 * 86400}


def parse_expiry(text: str, now: int) -> int:
    """``30d``, ``12h``, ``2w`` from now, or a date (``2027-01-31``, UTC midnight) or an ISO
    date-time with a zone; returns unix seconds."""
    match = _DURATION_RE.fullmatch(text)
    if match:
        return now + int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValidationError(f"invalid --expires {text[:40]!r}: use 30d, 12h, 2w or a date "
                              "like 2027-01-31") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp())


def _store() -> TokenStore:
    ctx: Context = click.get_current_context().obj
    if not Repo.exists(ctx.home):
        raise ValidationError(f"no DRE home at {ctx.home}: run `dre init` first")
    return TokenStore(ctx.home)


def _stamp(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def _json(token: TokenInfo) -> dict[str, object]:
    return {"id": token.id, "name": token.name, "rights": list(token.rights),
            "scopes": list(token.scopes), "created": token.created, "expires": token.expires,
            "revoked": token.revoked}


@click.group()
def token() -> None:
    """API tokens: who may publish or change scopes through the node's HTTP API."""


@token.command("create")
@click.option("--scope", "scopes", multiple=True, required=True,
              help="Scope the token acts in (@team), repeatable; * for every scope and "
                   "unscoped names.")
@click.option("--can", "rights", multiple=True, required=True, metavar="|".join(RIGHTS),
              help="Right: publish, scopes (create, grant, revoke), admin (all, and the "
                   "audit trail). Repeatable.")
@click.option("--name", default="token", show_default=True, help="A label for listings.")
@click.option("--expires", default=None, help="30d, 12h, 2w, or a date (2027-01-31).")
@json_option
def create(scopes: tuple[str, ...], rights: tuple[str, ...], name: str, expires: str | None,
           as_json: bool) -> None:
    """Create a token and print its secret (shown this once; only its hash is stored)."""
    now = int(time.time())
    expiry = parse_expiry(expires, now) if expires is not None else None
    info, secret = _store().create(name=name, rights=rights, scopes=scopes, now=now,
                                   expires=expiry)
    if as_json:
        emit_json({**_json(info), "secret": secret})
        return
    click.echo(secret)
    click.echo(f"token {info.id} ({name}): {', '.join(info.rights)} in {', '.join(info.scopes)}"
               f"; expires {_stamp(info.expires)}. The secret is shown only now.", err=True)


@token.command("list")
@json_option
def list_cmd(as_json: bool) -> None:
    """Every token (never the secrets)."""
    tokens = _store().list()
    if as_json:
        emit_json([_json(t) for t in tokens])
        return
    now = int(time.time())
    for t in tokens:
        status = ("revoked" if t.revoked is not None
                  else "expired" if not t.live(now) else "live")
        click.echo(f"{t.id}  {status:<7}  {','.join(t.rights):<20} {','.join(t.scopes):<24} "
                   f"{t.name}  expires {_stamp(t.expires)}")


@token.command("revoke")
@click.argument("token_id")
@json_option
def revoke(token_id: str, as_json: bool) -> None:
    """Revoke a token; a running node refuses it from its next request on."""
    info = _store().revoke(token_id, now=int(time.time()))
    if as_json:
        emit_json(_json(info))
    else:
        click.echo(f"revoked token {info.id} ({info.name})")


def register(group: click.Group) -> None:
    """Attach ``dre token`` to the top-level group."""
    group.add_command(token)
