"""Kept for tests written against it: the upload helper is ``tests.uploading``."""

from __future__ import annotations

from tests.uploading import upload_wheel as upload

__all__ = ["upload"]
