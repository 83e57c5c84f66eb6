"""Upload a small wheel through the legacy API of a WebTest app, as twine does."""

from __future__ import annotations

import hashlib
import os

from tests.conftest import basic
from tests.dists import make_wheel


def upload(testapp, tmp_path, name: str, version: str, *, user: str = "alice", status: int | str = 200):
    """POST a fresh wheel of ``name`` ``version``; the WebTest response."""
    folder = tmp_path / f"dist-{name}-{version}"
    folder.mkdir(exist_ok=True)
    path = make_wheel(str(folder), name, version)
    data = open(path, "rb").read()
    fields = {
        ":action": "file_upload",
        "protocol_version": "1",
        "metadata_version": "2.1",
        "name": name,
        "version": version,
        "filetype": "bdist_wheel",
        "pyversion": "py3",
        "sha256_digest": hashlib.sha256(data).hexdigest(),
    }
    return testapp.post(
        "/legacy/",
        params=list(fields.items()),
        upload_files=[("content", os.path.basename(path), data)],
        headers=basic(user),
        status=status,
    )
