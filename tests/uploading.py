"""Sends uploads the way twine does (multipart form + Basic auth): the one upload helper of the
WebTest tests (the e2e tests run the real twine through ``tests.e2e.clients.twine_upload``)."""

from __future__ import annotations

import os
import uuid

from tests.conftest import PASSWORD, basic
from tests.dists import digests, make_wheel


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


def upload_wheel(testapp, tmp_path, name: str, version: str, **kw):
    """Build a fresh small wheel of ``name`` ``version`` under ``tmp_path`` and ``upload`` it."""
    folder = tmp_path / f"dist-{name}-{version}"
    folder.mkdir(exist_ok=True)
    return upload(testapp, make_wheel(str(folder), name, version), name=name, version=version, **kw)


def wheel_upload_fields(path: str, name: str, version: str) -> dict[str, str]:
    """The form fields (all but the file) of twine's upload of the wheel at ``path``."""
    return {
        ":action": "file_upload",
        "protocol_version": "1",
        "metadata_version": "2.1",
        "name": name,
        "version": version,
        "filetype": "bdist_wheel",
        "pyversion": "py3",
        **digests(path),
    }


def multipart_upload(path: str, name: str, version: str, *, boundary: str | None = None) -> tuple[str, bytes]:
    """(Content-Type, body) of twine's raw multipart upload of the wheel at ``path``."""
    boundary = boundary or uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in wheel_upload_fields(path, name, version).items()
    ]
    with open(path, "rb") as f:
        content = f.read()
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="content"; '
        f'filename="{os.path.basename(path)}"\r\nContent-Type: application/octet-stream\r\n\r\n'.encode()
        + content
        + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    return f"multipart/form-data; boundary={boundary}", b"".join(parts)
