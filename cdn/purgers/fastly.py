"""Fastly: purge by surrogate key through Fastly's API, soft purge by default.

One key: ``POST {api_url}/service/{service_id}/purge/{key}``; several:
``POST {api_url}/service/{service_id}/purge`` with the keys in a
``Surrogate-Key`` header (Fastly's batch purge, at most 256 keys a call).
A soft purge marks the objects stale instead of removing them, so Fastly can
still serve them while it revalidates or if the origin is down.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from urllib.parse import quote

from cdn.purge import Purger, PurgerMisconfigured, flag, seconds, setting
from cdn.purgers._http import send

API_URL = "https://api.fastly.com"
#: Fastly's limit of keys in one batch purge.
BATCH = 256
#: Where the API token may come from, in order: the [cdn] key (set it only through
#: the environment variable CLOUDPYPI_CDN_FASTLY_API_TOKEN), FASTLY_API_TOKEN, a file.
TOKEN_ENV = ("FASTLY_API_TOKEN",)


class FastlyPurger(Purger):
    """Purges surrogate keys on one Fastly service; paths are ignored."""

    name = "fastly"

    def __init__(
        self,
        *,
        service_id: str,
        api_token: str,
        api_url: str = API_URL,
        soft: bool = True,
        timeout: float = 10.0,
    ) -> None:
        self.service_id = service_id
        self._token = api_token
        self.api_url = api_url.rstrip("/")
        self.soft = soft
        self.timeout = timeout

    @classmethod
    def from_config(
        cls, settings: Mapping[str, str], environ: Mapping[str, str] | None = None
    ) -> FastlyPurger:
        """``fastly_service_id``, the token (see TOKEN_ENV, or ``fastly_api_token_file``),
        ``fastly_api_url``, ``fastly_soft_purge`` and ``purge_timeout``."""
        environ = os.environ if environ is None else environ
        service_id = setting(settings, "fastly_service_id")
        if not service_id:
            raise PurgerMisconfigured("[cdn] fastly_service_id is required for purge = fastly")
        return cls(
            service_id=service_id,
            api_token=_token(settings, environ),
            api_url=setting(settings, "fastly_api_url", API_URL),
            soft=flag(settings, "fastly_soft_purge", True),
            timeout=seconds(settings, "purge_timeout", 10.0),
        )

    def purge(self, keys: Sequence[str], paths: Sequence[str]) -> None:
        keys = list(dict.fromkeys(k for k in keys if k))
        headers = {"Fastly-Key": self._token, "Accept": "application/json"}
        if self.soft:
            headers["Fastly-Soft-Purge"] = "1"
        service = f"{self.api_url}/service/{quote(self.service_id, safe='')}"
        if len(keys) == 1:
            # The key goes into the path as pypi.org's keys ("project/name") always have.
            send(
                "POST",
                f"{service}/purge/{quote(keys[0], safe='/')}",
                headers,
                timeout=self.timeout,
                secrets=[self._token],
            )
            return
        for start in range(0, len(keys), BATCH):
            batch = {**headers, "Surrogate-Key": " ".join(keys[start : start + BATCH])}
            send("POST", f"{service}/purge", batch, timeout=self.timeout, secrets=[self._token])

    def describe(self) -> str:
        return f"fastly service {self.service_id} at {self.api_url} ({'soft' if self.soft else 'hard'} purge)"


def _token(settings: Mapping[str, str], environ: Mapping[str, str]) -> str:
    token = setting(settings, "fastly_api_token")
    for var in TOKEN_ENV:
        token = token or environ.get(var, "").strip()
    path = setting(settings, "fastly_api_token_file")
    if not token and path:
        try:
            with open(path, encoding="utf-8") as f:
                token = f.read().strip()
        except OSError as exc:
            raise PurgerMisconfigured(
                f"[cdn] fastly_api_token_file: cannot read {path}: {exc.strerror}"
            ) from None
    if not token:
        raise PurgerMisconfigured(
            "purge = fastly needs an API token: set FASTLY_API_TOKEN (or CLOUDPYPI_CDN_FASTLY_API_TOKEN) "
            "in the environment, or [cdn] fastly_api_token_file to a file that holds it"
        )
    return token
