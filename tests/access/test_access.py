"""Private packages on the WSGI app (SQLite and PostgreSQL): visibility, the reader role,
``[access] read = authenticated``, scoped tokens, and what shared caches may hold."""

from __future__ import annotations

import xmlrpc.client
from urllib.parse import urlsplit

import pytest
import webtest

from pypi.app import make_app
from pypi.index import access, auth, packages, tokens
from pypi.index.db import Database
from tests.conftest import PASSWORD, basic, make_config
from tests.dists import make_wheel
from tests.uploading import upload

SECRET = "Secret.Pkg"
OPEN = "Open.Pkg"


@pytest.fixture
def carol(db):
    with db.transaction(write=True) as tx:
        return auth.create_user(tx, "carol", PASSWORD)


@pytest.fixture
def index(testapp, db, users, carol, tmp_path):
    """alice owns Secret.Pkg (private) and Open.Pkg (public); carol is a reader of Secret.Pkg."""
    for name in (SECRET, OPEN):
        upload(testapp, make_wheel(str(tmp_path), name, "1.0"), name=name, version="1.0")
    with db.transaction(write=True) as tx:
        project = packages.get_project(tx, SECRET)
        assert access.set_visibility(tx, project, True)
        auth.grant(tx, project["id"], carol, "reader")
    return testapp


def _xmlrpc(testapp, method, *params, headers=None, status=200):
    body = xmlrpc.client.dumps(params, method)
    r = testapp.post("/RPC2", body, headers={"Content-Type": "text/xml", **(headers or {})}, status=status)
    return xmlrpc.client.loads(r.body)[0][0] if status == 200 else r


def _file_path(testapp, name, headers):
    """The file's path on this index (the JSON API's URLs are absolute, from the configured address)."""
    r = testapp.get(f"/pypi/{name}/json", headers=headers)
    url = urlsplit(r.json["urls"][0]["url"])
    assert url.netloc == "127.0.0.1:8080", url  # the configured address, not a files URL
    return url.path


def test_a_private_project_does_not_exist_for_anonymous_readers(index):
    for path in (
        "/simple/secret-pkg/",
        "/pypi/secret-pkg/json",
        "/pypi/secret-pkg/1.0/json",
        "/project/secret-pkg/",
    ):
        hidden = index.get(path, status=404)
        unknown = index.get(path.replace("secret-pkg", "no-such-pkg"), status=404)
        assert hidden.status.replace("secret-pkg", "X") == unknown.status.replace("no-such-pkg", "X")
        assert hidden.headers["Cache-Control"] == unknown.headers["Cache-Control"]
    assert "ecret" not in index.get("/simple/").text
    assert (
        "ecret" not in index.get("/simple/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}).text
    )
    assert "ecret" not in index.get("/").text
    # Search matches name prefixes (an index range at pypi.org's size).
    assert "ecret" not in index.get("/?q=s").text and "Open.Pkg" in index.get("/?q=open").text
    assert _xmlrpc(index, "list_packages") == [OPEN]
    assert list(_xmlrpc(index, "list_packages_with_serial")) == [OPEN]
    assert all("ecret" not in row[0] for row in _xmlrpc(index, "changelog_since_serial", 0))
    assert _xmlrpc(index, "package_releases", SECRET) == []
    assert _xmlrpc(index, "release_urls", SECRET, "1.0") == []
    assert _xmlrpc(index, "release_data", SECRET, "1.0") == {}


def test_owners_and_readers_see_it_privately_others_do_not(index):
    for user in ("alice", "carol"):
        r = index.get("/simple/secret-pkg/", headers=basic(user))
        assert r.headers["Cache-Control"] == "private, no-store"
        assert "Surrogate-Key" not in r.headers and "Surrogate-Control" not in r.headers
        assert "Secret.Pkg" in index.get("/simple/", headers=basic(user)).text
        assert SECRET in _xmlrpc(index, "list_packages", headers=basic(user))
        # File links point at the application (which checks), not at a public files URL.
        assert _file_path(index, "secret-pkg", basic(user)).startswith("/packages/")
    index.get("/simple/secret-pkg/", headers=basic("bob"), status=404)
    assert "ecret" not in index.get("/simple/", headers=basic("bob")).text


def test_private_files_are_checked_and_never_publicly_cacheable(index):
    url = _file_path(index, "secret-pkg", basic("alice"))
    index.get(url, status=404)
    index.get(url, headers=basic("bob"), status=404)
    r = index.get(url, headers=basic("carol"))
    assert r.body[:2] == b"PK" and r.headers["Cache-Control"] == "private, no-store"
    public = index.get(_file_path(index, "open-pkg", {}))
    assert "immutable" in public.headers["Cache-Control"]


def test_render_cache_never_serves_a_readers_page_to_anyone_else(index):
    for first, then in (("alice", None), (None, "alice"), ("alice", "bob")):
        a = index.get("/simple/", headers=basic(first) if first else {}).text
        b = index.get("/simple/", headers=basic(then) if then else {}).text
        assert ("Secret.Pkg" in a) == (first == "alice") and ("Secret.Pkg" in b) == (then == "alice")
        h1 = index.get("/", headers=basic(first) if first else {}).text
        h2 = index.get("/", headers=basic(then) if then else {}).text
        assert ("Secret.Pkg" in h1) == (first == "alice") and ("Secret.Pkg" in h2) == (then == "alice")


def test_visibility_moves_the_serial_and_queues_purges(index, db):
    before = index.get("/simple/").headers["X-PyPI-Last-Serial"]
    with db.transaction(write=True) as tx:
        tx.execute("DELETE FROM purge_outbox")
        assert access.set_visibility(tx, packages.get_project(tx, SECRET), False)
        assert not access.set_visibility(tx, packages.get_project(tx, SECRET), False)
    with db.transaction() as tx:  # the purges are queued as the change commits
        keys = {r["purge_key"] for r in tx.all("SELECT purge_key FROM purge_outbox")}
    assert {"index", "project/secret-pkg"} <= keys
    r = index.get("/simple/")
    assert int(r.headers["X-PyPI-Last-Serial"]) > int(before) and "Secret.Pkg" in r.text
    index.get("/simple/secret-pkg/")


def test_readers_cannot_upload(index, tmp_path):
    r = upload(
        index, make_wheel(str(tmp_path), SECRET, "2.0"), name=SECRET, version="2.0", user="carol", status=403
    )
    assert "isn't allowed to upload" in r.text


# -- scoped tokens ---------------------------------------------------------------------


def _token(db, username, *scopes, expires_days=None):
    with db.transaction(write=True) as tx:
        return tokens.create(tx, auth.find_user(tx, username), list(scopes), expires_days=expires_days)[1]


def test_a_token_scoped_to_another_project_is_refused_with_a_clear_message(index, db, tmp_path):
    token = _token(db, "alice", "upload:open-pkg")
    wheel = make_wheel(str(tmp_path), SECRET, "2.0")
    r = upload(index, wheel, name=SECRET, version="2.0", user="__token__", password=token, status=403)
    assert "upload:open-pkg" in r.status and "may not upload to project 'Secret.Pkg'" in r.status
    upload(
        index,
        make_wheel(str(tmp_path), OPEN, "2.0"),
        name=OPEN,
        version="2.0",
        user="__token__",
        password=token,
    )
    # The scoped token reads public projects like anyone, but not the private one.
    index.get("/simple/open-pkg/", headers=basic("__token__", token))
    r = index.get("/simple/secret-pkg/", headers=basic("__token__", token), status=403)
    assert "does not allow reading project 'secret-pkg'" in r.text


def test_read_tokens_read_but_do_not_upload(index, db, tmp_path):
    token = _token(db, "carol", "read:secret-pkg")
    r = index.get("/simple/secret-pkg/", headers=basic("__token__", token))
    assert "Secret.Pkg" in r.text
    url = _file_path(index, "secret-pkg", basic("__token__", token))
    assert index.get(url, headers=basic("__token__", token)).body[:2] == b"PK"
    r = upload(
        index,
        make_wheel(str(tmp_path), "Carols", "1.0"),
        name="Carols",
        version="1.0",
        user="__token__",
        password=token,
        status=403,
    )
    assert "read:secret-pkg" in r.text


def test_expired_and_revoked_tokens_are_refused_and_old_tokens_stay_unscoped(index, db, tmp_path):
    unscoped = _token(db, "alice")
    with db.transaction(write=True) as tx:
        legacy = auth.create_token(tx, auth.find_user(tx, "alice"), "created by adduser")
    for token in (unscoped, legacy):
        assert "Secret.Pkg" in index.get("/simple/", headers=basic("__token__", token)).text
    upload(
        index,
        make_wheel(str(tmp_path), SECRET, "3.0"),
        name=SECRET,
        version="3.0",
        user="__token__",
        password=legacy,
    )
    with db.transaction(write=True) as tx:
        tx.execute(
            "UPDATE api_tokens SET expires = '2000-01-01T00:00:00.000000Z' WHERE token_hash = ?",
            (auth._token_hash(unscoped),),
        )
        token_id = tx.scalar("SELECT id FROM api_tokens WHERE token_hash = ?", (auth._token_hash(legacy),))
        assert tokens.revoke(tx, token_id)
        listed = {t.id: t.state for t in tokens.list_tokens(tx, auth.find_user(tx, "alice"))}
    assert sorted(listed.values()) == ["expired", "revoked"]
    for token in (unscoped, legacy):
        r = index.get("/simple/", headers=basic("__token__", token), status=401)
        assert r.headers["WWW-Authenticate"] == 'Basic realm="pypi"'
        upload(
            index,
            make_wheel(str(tmp_path), SECRET, "4.0"),
            name=SECRET,
            version="4.0",
            user="__token__",
            password=token,
            status=403,
        )


def test_tokens_are_stored_as_hashes_only(index, db):
    token = _token(db, "alice", "read", expires_days=1)
    with db.transaction() as tx:
        rows = [dict(r) for r in tx.all("SELECT * FROM api_tokens")]
    assert token not in repr(rows) and any(r["token_hash"] == auth._token_hash(token) for r in rows)


def test_bad_scopes_are_refused(db, users):
    with db.transaction(write=True) as tx, pytest.raises(tokens.ScopeError, match="invalid scope"):
        tokens.create(tx, auth.find_user(tx, "alice"), ["write:foo"])


# -- read = authenticated ----------------------------------------------------------------


@pytest.fixture
def closed(tmp_path, db_url, index):
    """The same index under [access] read = authenticated."""
    config = make_config(tmp_path, db_url, access={"read": "authenticated"})
    database = Database(config.database.url)
    yield webtest.TestApp(make_app(config, db=database))
    database.close()


def test_a_closed_index_answers_401_to_every_anonymous_read(closed):
    open_file = _file_path(closed, "open-pkg", basic("bob"))
    assert open_file.startswith("/packages/")
    for path in (
        "/simple/",
        "/simple/open-pkg/",
        "/pypi/open-pkg/json",
        "/",
        "/project/open-pkg/",
        open_file,
    ):
        r = closed.get(path, status=401)
        assert r.headers["WWW-Authenticate"] == 'Basic realm="pypi"'
        assert r.headers["Cache-Control"] == "private, no-store"
        closed.get(path, headers=basic("bob", "wrong password"), status=401)
        ok = closed.get(path, headers=basic("bob"))
        assert ok.headers["Cache-Control"] == "private, no-store" and "Surrogate-Key" not in ok.headers
    r = _xmlrpc(closed, "list_packages", status=401)
    assert r.headers["WWW-Authenticate"] == 'Basic realm="pypi"'
    assert _xmlrpc(closed, "list_packages", headers=basic("bob")) == [OPEN]


def test_a_closed_index_refuses_tokens_without_a_read_scope(closed, db):
    token = _token(db, "alice", "upload")
    r = closed.get("/simple/", headers=basic("__token__", token), status=403)
    assert "does not allow reading" in r.text
    only = _token(db, "alice", "read:secret-pkg")
    page = closed.get("/simple/", headers=basic("__token__", only)).text
    assert "Secret.Pkg" in page and "Open.Pkg" not in page
    closed.get("/simple/open-pkg/", headers=basic("__token__", only), status=403)


def test_home_page_counts_leave_out_what_the_reader_may_not_see(index):
    assert "1 projects, 1 releases, 1 files." in index.get("/").text
    assert "2 projects, 2 releases, 2 files." in index.get("/", headers=basic("alice")).text
    assert "1 projects, 1 releases, 1 files." in index.get("/", headers=basic("bob")).text
