"""The one description of a distribution file that the JSON API and XML-RPC both send
(pypi.org's shape: digests, sizes, upload times, the download URL)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def file_info(f: Mapping[str, Any], url: str) -> dict[str, Any]:
    """One file row (``packages.FILE_COLUMNS``) as pypi.org's JSON API describes it.

    Absent values are None (JSON ``null``); XML-RPC, which has no null, uses
    ``xmlrpc_file_info``.
    """
    upload_time = f["upload_time"]
    return {
        "comment_text": f["comment_text"] or "",
        "digests": {
            "blake2b_256": f["blake2_256_digest"],
            "md5": f["md5_digest"],
            "sha256": f["sha256_digest"],
        },
        "downloads": -1,
        "filename": f["filename"],
        "has_sig": False,
        "md5_digest": f["md5_digest"],
        "packagetype": f["packagetype"],
        "python_version": f["python_version"],
        "requires_python": f["requires_python"] or None,
        "size": f["size"],
        "upload_time": upload_time[:19],
        "upload_time_iso_8601": upload_time,
        "url": url,
        "yanked": bool(f["yanked"]),
        "yanked_reason": f["yanked_reason"] or None,
    }
