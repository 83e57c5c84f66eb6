"""Scoped, expiring, revocable API tokens (``cloudpypi token``) and what their scopes allow.

Scopes: ``upload:PROJECT`` (upload to that project only), ``upload`` (every project
the user may upload to), ``read:PROJECT``, ``read``. A token with no scope (and every
token made by ``adduser --token`` before scopes existed) is unscoped: it has every
right its user has, as a password does. Tokens are kept only as a SHA-256 hash.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from packaging.utils import canonicalize_name

from pypi.index import auth
from pypi.index.db import Tx, utcnow

ACTIONS = ("upload", "read")


class ScopeError(ValueError):
    """A scope that is not one of the forms above."""


def parse_scope(text: str) -> str:
    """``upload:My_Pkg`` -> ``upload:my-pkg``; ScopeError for anything else."""
    action, sep, project = text.strip().partition(":")
    if action not in ACTIONS or (sep and not project.strip()):
        raise ScopeError(f"invalid scope {text!r}: use upload:PROJECT, upload, read:PROJECT or read")
    return f"{action}:{canonicalize_name(project.strip())}" if sep else action


def allows(user: auth.User, action: str, project: str | None = None) -> bool:
    """Whether the user's credentials carry the right ``action`` (on ``project``, if named).

    ``project`` None asks whether the credentials allow ``action`` on anything at all.
    """
    if user.scopes is None:
        return True
    if action in user.scopes:
        return True
    prefix = action + ":"
    if project is None:
        return any(s.startswith(prefix) for s in user.scopes)
    return prefix + canonicalize_name(project) in user.scopes


def scoped_projects(user: auth.User, action: str) -> set[str] | None:
    """The normalized names the credentials limit ``action`` to; None: not limited by project."""
    if user.scopes is None or action in user.scopes:
        return None
    prefix = action + ":"
    return {s[len(prefix) :] for s in user.scopes if s.startswith(prefix)}


def describe(user: auth.User) -> str:
    return " ".join(user.scopes or ()) or "unscoped"


@dataclass(frozen=True)
class TokenInfo:
    id: int
    description: str
    scopes: tuple[str, ...]
    created: str
    expires: str | None
    revoked: str | None

    @property
    def state(self) -> str:
        if self.revoked:
            return "revoked"
        if self.expires and self.expires <= utcnow():
            return "expired"
        return "active"


def create(
    tx: Tx, user: auth.User, scopes: list[str], *, expires_days: int | None = None, description: str = ""
) -> tuple[int, str]:
    """(token id, token): the token is shown once and only its hash is kept."""
    parsed = tuple(dict.fromkeys(parse_scope(s) for s in scopes))
    expires = None
    if expires_days is not None:
        if expires_days <= 0:
            raise ScopeError("--expires must be a positive number of days")
        when = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=expires_days)
        expires = when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    token = auth.create_token(tx, user, description, scopes=parsed, expires=expires)
    token_id = int(tx.scalar("SELECT id FROM api_tokens WHERE token_hash = ?", (auth._token_hash(token),)))
    return token_id, token


def list_tokens(tx: Tx, user: auth.User) -> list[TokenInfo]:
    rows = tx.all(
        "SELECT id, description, scopes, created, expires, revoked FROM api_tokens "
        "WHERE user_id = ? ORDER BY id",
        (user.id,),
    )
    return [
        TokenInfo(
            r["id"], r["description"], tuple(r["scopes"].split()), r["created"], r["expires"], r["revoked"]
        )
        for r in rows
    ]


def revoke(tx: Tx, token_id: int) -> bool:
    """Revoke the token; False if there is no such token."""
    row = tx.one("SELECT id, revoked FROM api_tokens WHERE id = ?", (token_id,))
    if row is None:
        return False
    if not row["revoked"]:
        tx.execute("UPDATE api_tokens SET revoked = ? WHERE id = ?", (utcnow(), token_id))
    return True
