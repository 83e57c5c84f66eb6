"""Amazon CloudFront: invalidate URL paths with ``create_invalidation``.

CloudFront has no surrogate keys, so this purger uses the paths and ignores
the keys. Paths go out in batches (CloudFront accepts up to 3,000 paths, of
which at most 15 with ``*``, in progress at once per distribution).
Credentials come from boto3's usual chain (environment, profile, instance role).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from cdn.purge import PurgeError, Purger, PurgerMisconfigured, setting

BATCH = 1000


class CloudFrontPurger(Purger):
    """Invalidates paths on one CloudFront distribution."""

    name = "cloudfront"

    def __init__(self, *, client: Any, distribution_id: str, batch_size: int = BATCH) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.client = client
        self.distribution_id = distribution_id
        self.batch_size = batch_size

    @classmethod
    def from_config(cls, settings: Mapping[str, str]) -> CloudFrontPurger:
        """``cloudfront_distribution_id``, ``cloudfront_endpoint_url`` (tests, other clouds),
        ``cloudfront_batch_size``."""
        distribution_id = setting(settings, "cloudfront_distribution_id")
        if not distribution_id:
            raise PurgerMisconfigured("[cdn] cloudfront_distribution_id is required for purge = cloudfront")
        try:
            batch_size = int(setting(settings, "cloudfront_batch_size", str(BATCH)))
        except ValueError:
            raise PurgerMisconfigured("[cdn] cloudfront_batch_size: not a whole number") from None
        if not 1 <= batch_size <= 3000:
            raise PurgerMisconfigured("[cdn] cloudfront_batch_size: must be 1..3000")
        try:
            import boto3
        except ImportError:
            raise PurgerMisconfigured(
                "purge = cloudfront needs boto3, which is not installed (pip install 'cloudpypi[s3]')"
            ) from None
        client = boto3.session.Session().client(
            "cloudfront",
            region_name="us-east-1",
            endpoint_url=setting(settings, "cloudfront_endpoint_url") or None,
        )
        return cls(client=client, distribution_id=distribution_id, batch_size=batch_size)

    def purge(self, keys: Sequence[str], paths: Sequence[str]) -> None:
        import botocore.exceptions

        paths = [p if p.startswith("/") else "/" + p for p in dict.fromkeys(p for p in paths if p)]
        for start in range(0, len(paths), self.batch_size):
            batch = paths[start : start + self.batch_size]
            try:
                self.client.create_invalidation(
                    DistributionId=self.distribution_id,
                    InvalidationBatch={
                        "Paths": {"Quantity": len(batch), "Items": batch},
                        "CallerReference": f"cloudpypi-{uuid.uuid4().hex}",
                    },
                )
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
                raise PurgeError(f"CloudFront invalidation on {self.distribution_id} failed: {exc}") from None

    def describe(self) -> str:
        return f"cloudfront distribution {self.distribution_id}"

    def close(self) -> None:
        close = getattr(self.client, "close", None)
        if close:
            close()
