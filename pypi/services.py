"""The ready-built parts a view works with, made once per application."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import storage
from cdn.policy import CachePolicy
from cdn.urls import URLBuilder
from pypi.config import Config
from pypi.index.access import PrivateFiles
from pypi.index.db import Database
from pypi.index.render_cache import RenderCache
from pypi.index.segmented import SegmentedPages
from pypi.index.throttle import LoginThrottle
from pypi.upload.pipeline import Uploader


@dataclass
class Services:
    config: Config
    db: Database
    storage: storage.Storage
    urls: URLBuilder
    policy: CachePolicy
    uploader: Uploader
    renders: RenderCache
    #: Whole-index pages kept as segments for the deployment (/simple/, XML-RPC lists).
    segments: SegmentedPages
    #: The files of private projects, held per serial (downloads need no lookup of their own).
    private_files: PrivateFiles
    #: Failed-login buckets of this process ([access] login_*).
    throttle: LoginThrottle
    #: Links to this application's own /packages/ (files that need the application's check).
    own_urls: URLBuilder
    #: cdn.signing's CloudFront signer when ``[cdn] signing_key_id`` is set, else None.
    cloudfront: Any = None
    #: pypi.upstream.proxy.UpstreamProxy in ``[upstream] mode = proxy``, else None.
    upstream: Any = None
