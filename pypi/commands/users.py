"""``cloudpypi adduser`` and ``cloudpypi addrole``."""

from __future__ import annotations

import argparse
import getpass
import sys

from pypi.commands.common import add_config_option, fail, find_user, load_config, open_database
from pypi.index import auth, changes, packages


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("adduser", help="create a user who can upload")
    p.add_argument("username")
    add_config_option(p)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    g.add_argument("--password", metavar="PW", help="the password (visible to other users of this machine)")
    p.add_argument("--email", default="")
    p.add_argument("--token", action="store_true", help="also print a new API token for the user")
    p.set_defaults(func=adduser)

    p = sub.add_parser("addrole", help="give a user a role on a project")
    p.add_argument("project")
    p.add_argument("username")
    p.add_argument("role", choices=auth.ROLES)
    add_config_option(p)
    p.set_defaults(func=addrole)


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if args.password is not None:
        return args.password
    first = getpass.getpass("Password: ")
    if first != getpass.getpass("Repeat: "):
        raise auth.AuthError("the passwords differ")
    return first


def adduser(args: argparse.Namespace) -> int:
    db = open_database(load_config(args))
    try:
        password = _password(args)
        with db.transaction(write=True) as tx:
            user = auth.create_user(tx, args.username, password, args.email)
            token = auth.create_token(tx, user, "created by adduser") if args.token else None
    except auth.AuthError as exc:
        return fail(str(exc))
    print(f"created user {user.username}")
    if token:
        print(f"API token (shown once; use with username __token__): {token}")
    return 0


def addrole(args: argparse.Namespace) -> int:
    db = open_database(load_config(args))
    try:
        with db.transaction(write=True) as tx:
            user = find_user(tx, args.username)
            if user is None:
                return 1
            project = packages.get_project(tx, args.project)
            new = project is None
            if new:
                project = packages.create_project(tx, args.project)
                changes.record(tx, project["name"], None, "create", None, new_project=True)
            auth.grant(tx, project["id"], user, args.role)
            changes.record(tx, project["name"], None, f"add {args.role.title()} {user.username}", None)
    except auth.AuthError as exc:
        return fail(str(exc))
    print(f"{user.username} is now {args.role} of {project['name']}")
    return 0
