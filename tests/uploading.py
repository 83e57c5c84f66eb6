"""Sends uploads the way twine does (multipart form + Basic auth), for WebTest tests."""

from __future__ import annotations

import os

from tests.conftest import PASSWORD, basic
from tests.dists import digests


def upload(
    testapp,
    path: str,
    *,
    name: str,
    version: str,
    filetype: str | None = None,
    user: str = "alice",
    password: str = PASSWORD,
    status: int | str = 200,
    url: str = "/legacy/",
    filename: str | None = None,
    content: bytes | None = None,
    **fields,
):
    """POST ``path`` as :action=file_upload; ``fields`` override or add form fields (None drops one)."""
    if content is None:
        with open(path, "rb") as f:
            content = f.read()
    if filetype is None:
        filetype = "bdist_wheel" if path.endswith(".whl") else "sdist"
    form = {
        ":action": "file_upload",
        "protocol_version": "1",
        "metadata_version": "2.1",
        "name": name,
        "version": version,
        "filetype": filetype,
        "pyversion": "py3" if filetype == "bdist_wheel" else "source",
        "summary": "A test package",
        **digests(path),
    }
    for key, value in fields.items():
        if value is None:
            form.pop(key, None)
        else:
            form[key] = value
    params = []
    for key, value in form.items():
        for v in value if isinstance(value, list) else [value]:
            params.append((key, v))
    return testapp.post(
        url,
        params=params,
        upload_files=[("content", filename or os.path.basename(path), content)],
        headers=basic(user, password) if user else {},
        status=status,
    )
