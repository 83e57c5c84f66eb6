"""``cloudpypi visibility`` and ``cloudpypi token create|list|revoke``."""

from __future__ import annotations

import argparse

from pypi.commands.common import add_config_option, fail, find_user, load_config, open_database
from pypi.index import access, packages, tokens


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("visibility", help="make a project private (owners, maintainers, readers) or public")
    p.add_argument("project")
    p.add_argument("visibility", choices=("private", "public"))
    add_config_option(p)
    p.set_defaults(func=visibility)

    p = sub.add_parser("token", help="create, list or revoke a user's API tokens")
    tsub = p.add_subparsers(dest="token_command", metavar="ACTION")
    tsub.required = True
    c = tsub.add_parser("create", help="make a new API token and print it (once)")
    c.add_argument("username")
    c.add_argument(
        "--scope",
        action="append",
        default=[],
        metavar="SCOPE",
        help="upload:PROJECT, upload, read:PROJECT or read (repeatable; none: every right of the user)",
    )
    c.add_argument("--expires", type=int, metavar="DAYS", help="days until the token stops working")
    c.add_argument("--description", default="", help="a note shown by token list")
    add_config_option(c)
    c.set_defaults(func=token_create)
    ls = tsub.add_parser("list", help="list a user's tokens (never the tokens themselves)")
    ls.add_argument("username")
    add_config_option(ls)
    ls.set_defaults(func=token_list)
    r = tsub.add_parser("revoke", help="revoke a token by the id token list shows")
    r.add_argument("token_id", type=int, metavar="TOKEN_ID")
    add_config_option(r)
    r.set_defaults(func=token_revoke)


def visibility(args: argparse.Namespace) -> int:
    db = open_database(load_config(args))
    with db.transaction(write=True) as tx:
        project = packages.get_project(tx, args.project)
        if project is None:
            return fail(f"no project named {args.project!r}")
        changed = access.set_visibility(tx, project, args.visibility == "private")
    state = "is now" if changed else "was already"
    print(f"{project['name']} {state} {args.visibility}")
    return 0


def token_create(args: argparse.Namespace) -> int:
    db = open_database(load_config(args))
    try:
        with db.transaction(write=True) as tx:
            user = find_user(tx, args.username)
            if user is None:
                return 1
            token_id, token = tokens.create(
                tx, user, args.scope, expires_days=args.expires, description=args.description
            )
    except tokens.ScopeError as exc:
        return fail(str(exc))
    scopes = " ".join(tokens.parse_scope(s) for s in args.scope) or "unscoped"
    print(f"token {token_id} for {user.username} ({scopes}); shown once, use with username __token__:")
    print(token)
    return 0


def token_list(args: argparse.Namespace) -> int:
    db = open_database(load_config(args))
    with db.transaction() as tx:
        user = find_user(tx, args.username)
        if user is None:
            return 1
        found = tokens.list_tokens(tx, user)
    print("ID\tSTATE\tSCOPES\tCREATED\tEXPIRES\tDESCRIPTION")
    for t in found:
        print(
            f"{t.id}\t{t.state}\t{' '.join(t.scopes) or 'unscoped'}\t{t.created[:19]}\t"
            f"{(t.expires or 'never')[:19]}\t{t.description}"
        )
    return 0


def token_revoke(args: argparse.Namespace) -> int:
    db = open_database(load_config(args))
    with db.transaction(write=True) as tx:
        if not tokens.revoke(tx, args.token_id):
            return fail(f"no token with id {args.token_id}")
    print(f"token {args.token_id} revoked")
    return 0
