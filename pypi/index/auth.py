"""Users, password hashing (argon2), API tokens and project roles."""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import re
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from pypi.index.db import IntegrityError, Tx, utcnow

ROLES = ("owner", "maintainer", "reader")
#: The roles that may upload; a reader may only read (a private project).
UPLOAD_ROLES = ("owner", "maintainer")
TOKEN_USERNAME = "__token__"
TOKEN_PREFIX = "pypi-"
_USERNAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,48}[A-Za-z0-9])?$")
#: OWASP's argon2id minimum (19 MiB, 2 passes): a login costs ~20 ms and does
#: not add argon2's default 64 MiB to the server's memory per concurrent upload.
_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)


@functools.cache
def _dummy_hash() -> str:
    """A hash to verify against when the user does not exist, so that timing does not tell
    which usernames exist (made on first use: argon2 costs every command's start-up otherwise)."""
    return _hasher.hash("not a real password")


class VerifiedPasswords:
    """Recent successful argon2 checks, so that a client sending its password with each of
    many uploads (twine, distutils) pays for argon2 once, not per file.

    An entry says only "this password matches this stored hash", which is always
    true once true: it is keyed by the stored hash itself, so a changed password
    misses at once. Failures are never kept (guessing still costs argon2), and
    neither is the password: the key is an HMAC under a random per-process secret.
    """

    def __init__(self, size: int = 1024, ttl: float = 300.0) -> None:
        self.size = size
        self.ttl = ttl
        self._secret = secrets.token_bytes(32)
        self._seen: OrderedDict[bytes, float] = OrderedDict()
        self._lock = threading.Lock()

    def _key(self, stored_hash: str, password: str) -> bytes:
        message = stored_hash.encode() + b"\0" + password.encode("utf-8", "surrogatepass")
        return hmac.new(self._secret, message, hashlib.sha256).digest()

    def known(self, stored_hash: str, password: str) -> bool:
        key = self._key(stored_hash, password)
        with self._lock:
            added = self._seen.get(key)
            if added is None:
                return False
            if time.monotonic() - added > self.ttl:
                del self._seen[key]
                return False
            return True

    def add(self, stored_hash: str, password: str) -> None:
        key = self._key(stored_hash, password)
        with self._lock:
            self._seen[key] = time.monotonic()
            self._seen.move_to_end(key)
            while len(self._seen) > self.size:
                self._seen.popitem(last=False)


_verified = VerifiedPasswords()


class AuthError(ValueError):
    """A user or role could not be created as asked."""


@dataclass(frozen=True)
class User:
    id: int
    username: str
    #: The scopes of the API token the user proved itself with; None: a password
    #: or an unscoped token (every right the user has).
    scopes: tuple[str, ...] | None = None


def parse_basic(header: str | None) -> tuple[str, str] | None:
    """``Authorization: Basic ...`` -> (username, password); None if absent or malformed."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    username, sep, password = decoded.partition(":")
    return (username, password) if sep else None


def create_user(tx: Tx, username: str, password: str, email: str = "") -> User:
    """Add a user; AuthError if the name is invalid or taken, or the password too short."""
    if not _USERNAME.match(username) or username == TOKEN_USERNAME:
        raise AuthError(f"invalid username {username!r}: use letters, digits, '.', '_' or '-' (at most 50)")
    if len(password) < 8:
        raise AuthError("the password must be at least 8 characters long")
    try:
        uid = tx.insert(
            "INSERT INTO users (username, password_hash, email, created) VALUES (?, ?, ?, ?)",
            (username, _hasher.hash(password), email, utcnow()),
        )
    except IntegrityError:
        raise AuthError(f"the username {username!r} is already taken") from None
    return User(uid, username)


def set_password(tx: Tx, username: str, password: str) -> None:
    if len(password) < 8:
        raise AuthError("the password must be at least 8 characters long")
    tx.execute("UPDATE users SET password_hash = ? WHERE username = ?", (_hasher.hash(password), username))


def find_user(tx: Tx, username: str) -> User | None:
    row = tx.one("SELECT id, username FROM users WHERE username = ? AND is_active = 1", (username,))
    return User(row["id"], row["username"]) if row else None


def authenticate(tx: Tx, username: str, password: str) -> User | None:
    """The user these credentials prove, or None. Accepts API tokens as ``__token__``."""
    if username == TOKEN_USERNAME:
        return _authenticate_token(tx, password)
    row = tx.one(
        "SELECT id, username, password_hash FROM users WHERE username = ? AND is_active = 1",
        (username,),
    )
    stored = row["password_hash"] if row else _dummy_hash()
    if row is None or not _verified.known(stored, password):
        try:
            _hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return None
        if row is not None:
            _verified.add(stored, password)
    return User(row["id"], row["username"]) if row else None


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_token(
    tx: Tx,
    user: User,
    description: str = "",
    *,
    scopes: tuple[str, ...] = (),
    expires: str | None = None,
) -> str:
    """Make an API token for ``user`` and return it; only its hash is kept.

    ``scopes`` (see pypi.index.tokens) limit it; none: unscoped. ``expires`` is ISO-8601 UTC text.
    """
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    tx.insert(
        "INSERT INTO api_tokens (user_id, token_hash, description, created, scopes, expires) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (user.id, _token_hash(token), description, utcnow(), " ".join(scopes), expires),
    )
    return token


def _authenticate_token(tx: Tx, token: str) -> User | None:
    """The token's user (with its scopes), or None if unknown, expired or revoked."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    row = tx.one(
        "SELECT u.id, u.username, t.scopes, t.expires, t.revoked FROM api_tokens t "
        "JOIN users u ON u.id = t.user_id WHERE t.token_hash = ? AND u.is_active = 1",
        (_token_hash(token),),
    )
    if row is None or row["revoked"] or (row["expires"] and row["expires"] <= utcnow()):
        return None
    scopes = tuple(row["scopes"].split()) if row["scopes"] else None
    return User(row["id"], row["username"], scopes)


def role_of(tx: Tx, project_id: int, user: User) -> str | None:
    row = tx.one("SELECT role FROM roles WHERE project_id = ? AND user_id = ?", (project_id, user.id))
    return row["role"] if row else None


def grant(tx: Tx, project_id: int, user: User, role: str) -> None:
    """Give ``user`` ``role`` on the project (replacing any role it had)."""
    if role not in ROLES:
        raise AuthError(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
    tx.execute("DELETE FROM roles WHERE project_id = ? AND user_id = ?", (project_id, user.id))
    tx.execute("INSERT INTO roles (project_id, user_id, role) VALUES (?, ?, ?)", (project_id, user.id, role))
