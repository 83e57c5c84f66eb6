"""Password checks: argon2 once per (stored hash, password), never a cached failure or a stale password."""

from __future__ import annotations

import pytest

from pypi.index import auth
from tests.conftest import PASSWORD


@pytest.fixture
def verify_calls(monkeypatch):
    """Counts argon2 verifications; starts from an empty cache of verified passwords."""
    monkeypatch.setattr(auth, "_verified", auth.VerifiedPasswords())
    calls = []
    real = auth._hasher

    class Counting:
        def verify(self, stored, password):
            calls.append(password)
            return real.verify(stored, password)

        def hash(self, password):
            return real.hash(password)

    monkeypatch.setattr(auth, "_hasher", Counting())
    return calls


def test_a_repeated_correct_password_costs_one_argon2_check(db, users, verify_calls):
    with db.transaction() as tx:
        for _ in range(5):
            assert auth.authenticate(tx, "alice", PASSWORD) == users["alice"]
    assert len(verify_calls) == 1


def test_wrong_passwords_are_checked_every_time(db, users, verify_calls):
    with db.transaction() as tx:
        assert auth.authenticate(tx, "alice", PASSWORD) is not None
        for _ in range(3):
            assert auth.authenticate(tx, "alice", "not the password") is None
        assert auth.authenticate(tx, "nobody", PASSWORD) is None
    assert len(verify_calls) == 5


def test_a_changed_password_takes_effect_at_once(db, users, verify_calls):
    with db.transaction() as tx:
        assert auth.authenticate(tx, "alice", PASSWORD) is not None
    with db.transaction(write=True) as tx:
        auth.set_password(tx, "alice", "a brand new password")
    with db.transaction() as tx:
        assert auth.authenticate(tx, "alice", PASSWORD) is None
        assert auth.authenticate(tx, "alice", "a brand new password") is not None


def test_a_deactivated_user_is_refused_even_with_a_cached_password(db, users, verify_calls):
    with db.transaction() as tx:
        assert auth.authenticate(tx, "bob", PASSWORD) is not None
    with db.transaction(write=True) as tx:
        tx.execute("UPDATE users SET is_active = 0 WHERE username = ?", ("bob",))
    with db.transaction() as tx:
        assert auth.authenticate(tx, "bob", PASSWORD) is None


def test_entries_expire_and_the_cache_is_bounded():
    cache = auth.VerifiedPasswords(size=2, ttl=0.0)
    cache.add("hash", "pw")
    assert not cache.known("hash", "pw")  # ttl 0: expired at once
    cache = auth.VerifiedPasswords(size=2, ttl=60.0)
    for pw in ("a", "b", "c"):
        cache.add("hash", pw)
    assert not cache.known("hash", "a") and cache.known("hash", "b") and cache.known("hash", "c")
    assert not cache.known("other hash", "b")
