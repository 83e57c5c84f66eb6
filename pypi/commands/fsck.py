"""``cloudpypi fsck``: report what the database and the storage disagree on; repair orphans."""

from __future__ import annotations

import argparse
import sys

import storage
from pypi.commands.common import add_config_option, fail, load_config, open_database, open_storage
from pypi.operations import fsck as fsck_mod
from pypi.operations import leftovers


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fsck",
        help="check that storage holds exactly the objects the database references",
        description="Report objects the database references that storage lacks (a file, or a "
        "wheel's .metadata), objects under packages/ that no file references (orphans), and "
        "size mismatches; with --verify-hashes also read every object and compare its SHA-256. "
        "Also reports what killed uploads left behind (spooled bodies in data_dir/tmp, the "
        "store's temporary files, S3 incomplete multipart uploads, Swift leftover segments) older "
        "than --temporaries-age. Exits 1 when anything is wrong. --repair removes orphans and "
        "those leftovers, and nothing else.",
    )
    add_config_option(p)
    p.add_argument("--verify-hashes", action="store_true", help="read every object and check its SHA-256")
    p.add_argument("--repair", action="store_true", help="remove orphaned objects (nothing else is changed)")
    p.add_argument(
        "--min-age",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="with --repair, keep orphans stored less than this long ago: an upload may be "
        "about to commit them (default 3600)",
    )
    p.add_argument(
        "--temporaries-age",
        type=float,
        default=None,
        metavar="SECONDS",
        help="report (and with --repair remove) crashed uploads' leftovers older than this "
        "(default: [server] temporaries_max_age, 1 day)",
    )
    p.add_argument("--jobs", type=int, default=4, metavar="N", help="objects hashed at once (default 4)")
    p.set_defaults(func=fsck)


def fsck(args: argparse.Namespace) -> int:
    config = load_config(args)
    db = open_database(config, migrate=False)
    store = open_storage(config)
    write = sys.stdout.write
    try:
        report = fsck_mod.check(
            db,
            store,
            verify_hashes=args.verify_hashes,
            repair=args.repair,
            min_age=args.min_age,
            jobs=max(1, args.jobs),
            temporaries_age=(
                args.temporaries_age
                if args.temporaries_age is not None
                else config.server.temporaries_max_age
            ),
            spool_dir=leftovers.spool_dir(config.data_dir),
            on_problem=lambda problem: write(f"{problem}\n"),  # as found: nothing is held
        )
    except storage.StorageError as exc:
        return fail(f"fsck: cannot list the {config.storage.backend} storage: {exc}")
    finally:
        store.close()
        db.close()
    for note in report.notes:
        print(f"fsck: {note}", file=sys.stderr)
    print(report.summary())
    return 0 if report.clean else 1
