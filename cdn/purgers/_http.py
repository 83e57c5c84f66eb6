"""One small HTTP call for the purgers that speak HTTP (Fastly's API, Varnish nodes)."""

from __future__ import annotations

import http.client
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping

from cdn.purge import PurgeError

#: How much of an error response's body goes into the PurgeError message.
EXCERPT = 200


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def send(
    method: str,
    url: str,
    headers: Mapping[str, str],
    *,
    timeout: float,
    secrets: Iterable[str] = (),
) -> bytes:
    """Send one request without a body; the response body on 2xx.

    Anything else (a refused connection, a timeout, a non-2xx status)
    raises PurgeError naming the method, URL and status, with the
    ``secrets`` (header values such as an API token) redacted.
    """
    secrets = list(secrets)
    request = urllib.request.Request(url, method=method, headers=dict(headers), data=b"")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return response.read()
    except urllib.error.HTTPError as exc:
        body = exc.read(EXCERPT * 2).decode("utf-8", "replace").strip().replace("\n", " ")[:EXCERPT]
        reason = f"{exc.code} {exc.reason}" + (f": {body}" if body else "")
        raise PurgeError(redact(f"{method} {url} answered {reason}", secrets)) from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise PurgeError(redact(f"{method} {url} failed: {reason}", secrets)) from None
