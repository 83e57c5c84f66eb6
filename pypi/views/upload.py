"""The legacy upload API (POST /legacy/, / and /pypi) that twine and distutils speak.

Authentication is checked before the body is read; the body is then parsed
by pypi.upload.spool (which streams the file on to the store as it arrives)
and handed to the upload pipeline. Every answer is private.
"""

from __future__ import annotations

import logging
import os
import time

from webob import Request, Response

from pypi.index import auth
from pypi.index.db import DatabaseError
from pypi.server.memory import release_free_memory
from pypi.services import Services
from pypi.upload.pipeline import UploadError
from pypi.upload.spool import FORM_OVERHEAD, Form, FormError, read_form
from pypi.views import viewer
from pypi.views.responses import error, tag

log = logging.getLogger(__name__)


def challenge(message: str = "Invalid or non-existent authentication information.") -> Response:
    response = error(401, message)
    response.headers["WWW-Authenticate"] = 'Basic realm="pypi"'
    return response


def _urlencoded(request: Request) -> Form | None:
    """A urlencoded form (a register without a file), or None for any other body."""
    if request.content_type != "application/x-www-form-urlencoded":
        return None
    form = Form()
    for key, value in request.POST.items():
        form.fields.setdefault(key, []).append(value)
    return form


def legacy(svc: Services, request: Request) -> Response:
    if request.method != "POST":
        return error(405, "Method Not Allowed: use POST to upload")
    credentials = auth.parse_basic(request.authorization and request.headers.get("Authorization"))
    if credentials is None:
        return challenge()
    user = viewer.login(svc, request, *credentials)
    if isinstance(user, Response):
        # Wrong credentials on an upload stay 403, as on pypi.org (429 when throttled).
        return error(403, user.text.strip()) if user.status_code == 401 else user

    limit = svc.config.webui.max_upload_size
    length = request.content_length
    if length is not None and length > limit + FORM_OVERHEAD:
        return error(413, f"File too large. Limit for uploads is {limit} bytes.")
    started = time.monotonic()
    try:
        form = _urlencoded(request) or read_form(
            request.body_file_raw.read if length is not None else request.body_file.read,
            content_type=request.headers.get("Content-Type", ""),
            content_length=length,
            max_file_size=limit,
            tmp_dir=os.path.join(svc.config.data_dir, "tmp"),
            # The file goes on to the store while it arrives (pypi.upload.pipeline.begin_stream).
            open_sink=lambda fields, name, spool: svc.uploader.begin_stream(fields, name, spool, length),
        )
    except FormError as exc:
        return error(exc.status, exc.message)
    received = time.monotonic() - started
    try:
        action = form.get(":action")
        via = request.user_agent or ""
        if action == "file_upload":
            result = svc.uploader.upload(user, form, via=via)
            if result.timings and form.file is not None:
                # Where an upload's time goes (the file reached the store while it arrived).
                log.info(
                    "upload of %s (%d bytes): body received in %.3f s, checks %.3f s, store %.3f s, "
                    "commit %.3f s",
                    result.filename,
                    form.file.size,
                    received,
                    *(result.timings.get(k, 0.0) for k in ("checks", "store", "commit")),
                )
            response = Response(
                body=b"OK\n" if result.created else b"OK (this file was already uploaded)\n",
                content_type="text/plain",
                charset="utf-8",
            )
            return tag(response, "private")
        if action == "submit":
            svc.uploader.register(user, form)
            return tag(Response(body=b"OK\n", content_type="text/plain", charset="utf-8"), "private")
        if action in ("verify", "submit_pkg_info"):
            return tag(Response(body=b"OK\n", content_type="text/plain", charset="utf-8"), "private")
        return error(400, f"Unknown action: {action!r}. Use :action=file_upload or :action=submit.")
    except UploadError as exc:
        return error(exc.status, exc.message)
    except DatabaseError as exc:
        log.error("upload failed on the database: %s", exc)
        return error(503, "Database unavailable, nothing was saved; retry the upload later.")
    finally:
        form.close()
        # What the upload's buffers freed goes back to the system, so the
        # server's memory stays flat across uploads of any size.
        release_free_memory()
