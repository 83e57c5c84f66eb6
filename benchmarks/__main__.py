"""``python -m benchmarks run [--quick] [--only NAME ...]``, ``... storage`` and ``... scale [--scale F]``."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["mirror"]:  # issue 10, its own options: python -m benchmarks mirror --help
        from benchmarks import mirror

        return mirror.main(argv[1:])
    from benchmarks.suite import ALL

    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="CloudPyPI side by side with pypiserver, devpi-server and nginx")
    p.add_argument(
        "--quick", action="store_true", help="for development: 1 repetition, 5 s wrk runs, no 1 GiB wheel"
    )
    p.add_argument(
        "--only",
        action="append",
        default=[],
        choices=ALL,
        metavar="NAME",
        help=f"run only this server (repeatable): {', '.join(ALL)}",
    )
    s = sub.add_parser("storage", help="issue 3: peak RSS and upload time per storage backend")
    s.add_argument("--quick", action="store_true", help="1 repetition, no 1 GiB file")
    s.add_argument(
        "--only", action="append", default=[], metavar="BACKEND", help="local, s3 or swift (repeatable)"
    )
    sc = sub.add_parser("scale", help="issue 12: pypi.org's size (600k projects, 6M files) vs 1,000 files")
    sc.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="multiply projects, files and journal rows (e.g. 0.05 for development)",
    )
    sc.add_argument("--seconds", type=int, default=10, help="length of each wrk run")
    sc.add_argument(
        "--database",
        metavar="URL",
        help="measure this already-built pypi.org-shaped PostgreSQL database instead of building one "
        "(build it once with: python -m benchmarks.scale URL [--scale F])",
    )
    sc.add_argument("--no-fsck", action="store_true", help="skip fsck and migrate-storage --dry-run")
    sub.add_parser("list", help="the names --only accepts")
    sub.add_parser("mirror", help="issue 10: cloudpypi mirror against bandersnatch, proxy pip timing")
    args = parser.parse_args(argv)
    if args.command == "list":
        print("\n".join(ALL))
        return 0
    if args.command == "scale":
        from benchmarks import scale

        return scale.main(
            scale=args.scale, seconds=args.seconds, with_cli=not args.no_fsck, database=args.database
        )
    if args.command == "storage":
        from benchmarks import storage_backends

        return storage_backends.main(quick=args.quick, only=tuple(args.only))
    from benchmarks import suite

    return suite.main(quick=args.quick, only=tuple(args.only))


if __name__ == "__main__":
    sys.exit(main())
