"""CloudFront signed URLs (canned policy) for files that must not be public.

``[cdn] signing_key_id`` names the CloudFront public key (or key pair) ID and
``signing_key_file`` the PEM file of its RSA private key. Signing uses
botocore's CloudFrontSigner with an RSA-SHA1 signature (what CloudFront checks)
made by ``cryptography``.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping


class CloudFrontURLSigner:
    def __init__(self, key_id: str, private_key_pem: bytes) -> None:
        from botocore.signers import CloudFrontSigner
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import padding

        key = serialization.load_pem_private_key(private_key_pem, password=None)

        def rsa_signer(message: bytes) -> bytes:
            return key.sign(message, padding.PKCS1v15(), hashes.SHA1())  # noqa: S303 - CloudFront's choice

        self.key_id = key_id
        self._signer = CloudFrontSigner(key_id, rsa_signer)

    def sign(self, url: str, expires_in: int) -> str:
        """``url`` signed to expire ``expires_in`` seconds from now."""
        when = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=expires_in)
        return self._signer.generate_presigned_url(url, date_less_than=when)


def from_config(settings: Mapping[str, str]) -> CloudFrontURLSigner | None:
    """The signer of ``[cdn] signing_key_id`` and ``signing_key_file``; None when not configured."""
    key_id = (settings.get("signing_key_id") or "").strip()
    key_file = (settings.get("signing_key_file") or "").strip()
    if not key_id and not key_file:
        return None
    if not key_id or not key_file:
        raise ValueError("[cdn] signing_key_id and signing_key_file must be set together")
    try:
        with open(key_file, "rb") as f:
            pem = f.read()
    except OSError as exc:
        raise ValueError(f"[cdn] signing_key_file: cannot read {key_file}: {exc.strerror}") from None
    try:
        return CloudFrontURLSigner(key_id, pem)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"[cdn] signing_key_file: not an unencrypted PEM RSA private key: {exc}") from None
