"""Objects in an Amazon S3 bucket, or in any store that speaks the S3 API (boto3).

Every botocore, boto3, s3transfer and socket error is translated here into the
errors of ``storage.base``; none leaves this module.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import re
from collections.abc import Iterator, Mapping
from concurrent.futures import CancelledError
from typing import Any, BinaryIO
from urllib.parse import quote

import boto3
import urllib3.exceptions
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    CredentialRetrievalError,
    EndpointConnectionError,
    HTTPClientError,
    IncompleteReadError,
    InvalidRegionError,
    NoCredentialsError,
    PartialCredentialsError,
    ProfileNotFound,
    ResponseStreamingError,
)

from storage.base import (
    NotFound,
    ObjectHeaders,
    ObjectInfo,
    RangeNotSatisfiable,
    Storage,
    StorageError,
    StorageMisconfigured,
    StorageUnavailable,
    StreamingReader,
    Temporary,
    Upload,
    check_path,
    parse_content_range,
    range_header,
    set_read_info,
    settings_section,
)
from storage.s3_upload import TEMP_PREFIX, S3Upload, part_size_for

MiB = 1024 * 1024
#: S3 refuses parts below 5 MiB (except the last) and above 5 GiB.
MIN_PART_SIZE = 5 * MiB
MAX_PART_SIZE = 5 * 1024 * MiB

CANNED_ACLS = (
    "private",
    "public-read",
    "public-read-write",
    "authenticated-read",
    "aws-exec-read",
    "bucket-owner-read",
    "bucket-owner-full-control",
)
SERVER_SIDE_ENCRYPTIONS = ("AES256", "aws:kms")
ADDRESSING_STYLES = ("auto", "path", "virtual")
#: ``[storage] payload_signing``: ``auto`` is botocore's rule (a request's body is hashed into its
#: SigV4 signature unless it goes over https with a checksum header); ``false`` sends every body
#: as UNSIGNED-PAYLOAD (no second SHA-256 pass over each part; what protects the bytes in transit
#: is then TLS, or nothing more than TCP's checksum on plain http: for https or a trusted link
#: only); ``true`` signs every body.
PAYLOAD_SIGNING = ("auto", "true", "false")
RETRY_MODES = ("legacy", "standard", "adaptive")

_BUCKET_NAME = re.compile(r"^[a-zA-Z0-9.\-_]{3,255}$")
_NOT_FOUND_CODES = {"NoSuchKey", "NotFound", "404"}
_CREDENTIAL_CODES = {
    "403",
    "AccessDenied",
    "AllAccessDisabled",
    "ExpiredToken",
    "InvalidAccessKeyId",
    "InvalidToken",
    "SignatureDoesNotMatch",
    "TokenRefreshRequired",
}
_REGION_CODES = {
    "301",
    "PermanentRedirect",
    "AuthorizationHeaderMalformed",
    "IllegalLocationConstraintException",
}
_TRANSIENT_CODES = {
    "InternalError",
    "RequestTimeout",
    "ServiceUnavailable",
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
}
_UNREACHABLE = (
    EndpointConnectionError,
    ConnectTimeoutError,
    HTTPClientError,  # connection closed, read timeout, proxy errors
    ResponseStreamingError,
    IncompleteReadError,
    urllib3.exceptions.HTTPError,
)
_NO_CREDENTIALS = (
    NoCredentialsError,
    PartialCredentialsError,
    CredentialRetrievalError,
)


def make_client(
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
    addressing_style: str = "auto",
    max_attempts: int | None = None,
    retry_mode: str = "standard",
    connect_timeout: float | None = None,
    read_timeout: float | None = None,
    max_pool_connections: int = 10,
    payload_signing: str = "auto",
) -> Any:
    """Build the boto3 S3 client S3Storage uses (credentials None: boto3's default chain).

    With an ``endpoint_url`` (a store other than AWS) request checksums are sent
    only where the API requires them: many S3-compatible stores do not accept
    the CRC32 trailers that boto3 sends by default.
    """
    retries: dict[str, Any] = {"mode": retry_mode}
    if max_attempts is not None:
        retries["total_max_attempts"] = max_attempts
    options: dict[str, Any] = {
        "retries": retries,
        "s3": {"addressing_style": addressing_style, **_payload_signing(payload_signing)},
        "max_pool_connections": max_pool_connections,
        # SigV4 for presigned URLs too (boto3 presigns with SigV2 otherwise, which new regions refuse).
        "signature_version": "s3v4",
    }
    if connect_timeout is not None:
        options["connect_timeout"] = connect_timeout
    if read_timeout is not None:
        options["read_timeout"] = read_timeout
    if endpoint_url:
        options["request_checksum_calculation"] = "when_required"
        options["response_checksum_validation"] = "when_required"
    session = boto3.session.Session(
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret_access_key,
        region_name=region,
    )
    return session.client("s3", endpoint_url=endpoint_url, config=Config(**options))


def _payload_signing(value: str) -> dict[str, bool]:
    """botocore's ``s3.payload_signing_enabled`` for ``[storage] payload_signing`` (auto: unset)."""
    if value not in PAYLOAD_SIGNING:
        raise ValueError(f"payload_signing must be one of {', '.join(PAYLOAD_SIGNING)}")
    return {} if value == "auto" else {"payload_signing_enabled": value == "true"}


class S3Storage(Storage):
    """Objects at ``prefix + path`` in one bucket.

    Uploads go through boto3's transfer manager: one PUT below
    ``multipart_threshold``, a multipart upload above it (aborted if it
    fails), holding at most ``(max_concurrency + 1) * multipart_chunksize``
    bytes in memory whatever the file's size.
    """

    name = "s3"

    def __init__(
        self,
        *,
        client: Any,
        bucket: str,
        prefix: str = "",
        acl: str | None = None,
        server_side_encryption: str | None = None,
        public_url: str | None = None,
        multipart_threshold: int = 8 * MiB,
        multipart_chunksize: int = 8 * MiB,
        max_concurrency: int = 10,
        stream_parts_in_flight: int = 4,
    ) -> None:
        self.client = client
        self.bucket = bucket
        prefix = prefix.strip("/")
        self.prefix = prefix + "/" if prefix else ""
        self.base_url = public_url.rstrip("/") + "/" if public_url else None
        self.extra_args: dict[str, Any] = {}
        if acl:
            self.extra_args["ACL"] = acl
        if server_side_encryption:
            self.extra_args["ServerSideEncryption"] = server_side_encryption
        self.transfer_config = TransferConfig(
            multipart_threshold=multipart_threshold,
            multipart_chunksize=multipart_chunksize,
            max_concurrency=max_concurrency,
            preferred_transfer_client="classic",
        )
        # Parts read ahead of the uploading threads; s3transfer's default is 10.
        self.transfer_config.max_in_memory_upload_chunks = max_concurrency
        #: Parts of a streamed upload (``begin_upload``) held in memory while being sent.
        self.stream_parts_in_flight = min(stream_parts_in_flight, max_concurrency)

    @property
    def endpoint_url(self) -> str:
        return self.client.meta.endpoint_url

    @classmethod
    def from_config(cls, settings: Mapping[str, str], *, data_dir: str) -> S3Storage:
        """Build from ``[storage]``; sizes take a KB/MB/GB (binary) suffix as the AWS CLI's do."""
        s = settings_section(settings, data_dir)
        bucket = s.text("bucket")
        if not bucket:
            raise StorageMisconfigured("[storage] bucket is required for backend = s3", key="bucket")
        if not _BUCKET_NAME.match(bucket):
            raise StorageMisconfigured(
                f"[storage] bucket = {bucket!r} is not a valid bucket name",
                key="bucket",
            )
        prefix = s.text("prefix").strip("/")
        if prefix:
            try:
                check_path(prefix)
            except StorageError:
                raise StorageMisconfigured(
                    f"[storage] prefix = {prefix!r} is not a valid key prefix",
                    key="prefix",
                ) from None
        endpoint_url = s.url("endpoint_url")
        public_url = s.url("public_url")
        access_key_id = s.text("access_key_id") or None
        secret = s.secret("secret_access_key")
        if secret and not access_key_id:
            raise StorageMisconfigured(
                "[storage] access_key_id is required when a secret access key is set",
                key="access_key_id",
            )
        if access_key_id and not secret:
            raise StorageMisconfigured(
                "[storage] secret_access_key (or secret_access_key_file) is required"
                " when access_key_id is set",
                key="secret_access_key",
            )
        multipart_chunksize = s.size("multipart_chunksize", 8 * MiB, low=1)
        if not MIN_PART_SIZE <= multipart_chunksize <= MAX_PART_SIZE:
            raise StorageMisconfigured(
                f"[storage] multipart_chunksize = {multipart_chunksize} bytes is not"
                " between 5MB and 5GB (S3's part sizes)",
                key="multipart_chunksize",
            )
        max_concurrency = s.whole("max_concurrency", 10, low=1)
        try:
            client = make_client(
                endpoint_url=endpoint_url,
                region=s.text("region") or None,
                access_key_id=access_key_id,
                secret_access_key=secret,
                addressing_style=s.choice("addressing_style", ADDRESSING_STYLES, "auto"),
                max_attempts=s.whole("max_attempts", None, low=1),
                retry_mode=s.choice("retry_mode", RETRY_MODES, "standard"),
                connect_timeout=s.seconds("connect_timeout", None, low=0.001),
                read_timeout=s.seconds("read_timeout", None, low=0.001),
                max_pool_connections=max(10, max_concurrency),
                payload_signing=s.choice("payload_signing", PAYLOAD_SIGNING, "auto"),
            )
        except InvalidRegionError:
            raise StorageMisconfigured(
                f"[storage] region = {s.text('region')!r} is not a valid region name",
                key="region",
            ) from None
        except ProfileNotFound as exc:
            raise StorageMisconfigured(
                f"[storage] no access_key_id set and the AWS profile is unusable: {exc}",
                key="access_key_id",
            ) from None
        except (BotoCoreError, Boto3Error) as exc:
            raise StorageMisconfigured(f"[storage] cannot build the S3 client: {exc}") from None
        return cls(
            client=client,
            bucket=bucket,
            prefix=prefix,
            acl=s.choice("acl", CANNED_ACLS, None),
            server_side_encryption=s.choice("server_side_encryption", SERVER_SIDE_ENCRYPTIONS, None),
            public_url=public_url,
            multipart_threshold=s.size("multipart_threshold", 8 * MiB, low=1),
            multipart_chunksize=multipart_chunksize,
            max_concurrency=max_concurrency,
        )

    def _key(self, path: str) -> str:
        return self.prefix + path

    def check(self) -> None:
        """HEAD the bucket; on a refusal, list it too: a HEAD answer has no error code."""
        with self._translated("check bucket"):
            try:
                self.client.head_bucket(Bucket=self.bucket)
            except ClientError as exc:
                if _status(exc) not in (400, 403):
                    raise
                self.client.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix, MaxKeys=1)
                raise

    def _put(self, path: str, local_file: BinaryIO, headers: ObjectHeaders) -> None:
        with self._translated("store", path):
            args = self._upload_args(headers)
            self.client.upload_fileobj(local_file, self.bucket, self._key(path), **args)

    def _put_file(self, path: str, local_path: str, headers: ObjectHeaders) -> None:
        """Upload from the path: each part is read from the file as it is sent, so memory stays
        flat (``upload_fileobj`` holds up to ``max_concurrency`` whole parts in memory)."""
        with self._translated("store", path):
            args = self._upload_args(headers)
            self.client.upload_file(local_path, self.bucket, self._key(path), **args)

    def _upload_args(self, headers: ObjectHeaders) -> dict[str, Any]:
        """ExtraArgs and Config for boto3's managed uploads: the object's headers and metadata."""
        return {"ExtraArgs": self._object_args(headers), "Config": self.transfer_config}

    def _object_args(self, headers: ObjectHeaders) -> dict[str, Any]:
        """The arguments of a PUT (or of CreateMultipartUpload) that give an object its headers."""
        extra = dict(self.extra_args, ContentType=headers.content_type, Metadata=dict(headers.metadata))
        if headers.cache_control:
            extra["CacheControl"] = headers.cache_control
        return extra

    def _begin_upload(
        self, path: str | None, headers: ObjectHeaders, *, local_copy: str | None, size_hint: int | None
    ) -> Upload:
        """A multipart upload whose parts are sent as they fill (storage.s3_upload)."""
        part_size = part_size_for(self.transfer_config.multipart_chunksize, size_hint, MAX_PART_SIZE)
        return S3Upload(
            self,
            path,
            headers,
            part_size=part_size,
            in_flight=self.stream_parts_in_flight,
            local_copy=local_copy,
        )

    def _open(self, path: str, start: int, stop: int | None) -> BinaryIO:
        """One GET (a Range GET for a range); nothing of the body is read before the caller reads."""
        key = self._key(path)
        ranged = start != 0 or stop is not None
        args = {"Range": range_header(start, stop)} if ranged else {}
        with self._translated("read", path):
            response = self.client.get_object(Bucket=self.bucket, Key=key, **args)
        span = parse_content_range(response.get("ContentRange")) if ranged else None
        size = span[2] if span else response["ContentLength"]
        info = ObjectInfo(
            path=path,
            size=size,
            etag=_etag(response.get("ETag")),
            last_modified=response.get("LastModified"),
            content_type=response.get("ContentType"),
        )
        reader = io.BufferedReader(
            StreamingReader(response["Body"], lambda: self._translated("read", path)), 256 * 1024
        )
        # A store that ignores Range answers 200 with the whole object.
        return set_read_info(reader, info, (span[0], span[1]) if span else None)

    def _stat(self, path: str) -> ObjectInfo:
        key = self._key(path)
        with self._translated("stat", path):
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        return ObjectInfo(
            path=path,
            size=head["ContentLength"],
            etag=_etag(head.get("ETag")),
            last_modified=head.get("LastModified"),
            content_type=head.get("ContentType"),
        )

    def _metadata(self, path: str) -> dict[str, str]:
        """The metadata stored with the object (S3 lower-cases the names)."""
        key = self._key(path)
        with self._translated("stat", path):
            return dict(self.client.head_object(Bucket=self.bucket, Key=key).get("Metadata", {}))

    def _delete(self, path: str) -> None:
        key = self._key(path)
        with self._translated("delete", path):
            self.client.delete_object(Bucket=self.bucket, Key=key)

    def _list(self, prefix: str) -> Iterator[ObjectInfo]:
        """List by key prefix; folder markers (keys ending in ``/``) and unfinished uploads'
        temporaries are skipped."""
        start = len(self.prefix)
        temporaries = self.prefix + TEMP_PREFIX
        with self._translated(f"list {prefix!r}"):
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
                for item in page.get("Contents", ()):
                    key = item["Key"]
                    if key.endswith("/") or key.startswith(temporaries):
                        continue
                    yield ObjectInfo(
                        path=key[start:],
                        size=item["Size"],
                        etag=_etag(item.get("ETag")),
                        last_modified=item.get("LastModified"),
                    )

    def _public_url(self, path: str) -> str | None:
        """``public_url`` + the object's key, prefix included, percent-quoted (``+`` too)."""
        return self.base_url + quote(self._key(path)) if self.base_url else None

    def stale_temporaries(self, older_than: float) -> Iterator[Temporary]:
        """Incomplete multipart uploads under the prefix started more than ``older_than`` s ago
        (a killed upload leaves its parts stored, and billed, until aborted), and objects below
        ``TEMP_PREFIX`` written that long ago (a streamed upload killed before its copy)."""
        cutoff = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=older_than)
        start = len(self.prefix)
        with self._translated("list incomplete multipart uploads"):
            paginator = self.client.get_paginator("list_multipart_uploads")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
                for upload in page.get("Uploads", []):
                    initiated = _aware(upload.get("Initiated"))
                    if initiated is None or initiated < cutoff:
                        key, upload_id = upload["Key"], upload["UploadId"]
                        yield Temporary(
                            name=f"{key[start:]} (multipart upload {upload_id})",
                            size=None,
                            started=initiated,
                            ref=("multipart", key, upload_id),
                        )
        with self._translated("list unfinished uploads"):
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + TEMP_PREFIX):
                for item in page.get("Contents", ()):
                    modified = _aware(item.get("LastModified"))
                    if modified is None or modified < cutoff:
                        yield Temporary(
                            name=f"{item['Key'][start:]} (unfinished upload)",
                            size=item.get("Size"),
                            started=modified,
                            ref=("object", item["Key"], None),
                        )

    def remove_temporary(self, temporary: Temporary) -> None:
        kind, key, upload_id = temporary.ref
        if kind == "object":
            with self._translated("delete", key[len(self.prefix) :]):
                self.client.delete_object(Bucket=self.bucket, Key=key)
            return
        with self._translated("abort multipart upload", key[len(self.prefix) :]):
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            except ClientError as exc:
                if str(exc.response.get("Error", {}).get("Code", "")) != "NoSuchUpload":
                    raise

    def _signed_url(self, path: str, expires_in: int) -> str | None:
        """A presigned GET URL (SigV4, query-string authentication) valid ``expires_in`` seconds."""
        with self._translated("sign", path):
            return self.client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.bucket, "Key": self._key(path)},
                ExpiresIn=int(expires_in),
            )

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()

    @contextlib.contextmanager
    def _translated(self, action: str, path: str | None = None) -> Iterator[None]:
        """Turn whatever boto3 or the network raises into the errors of storage.base."""
        try:
            yield
        except StorageError:
            raise
        except ClientError as exc:
            raise self._client_error(exc, action, path) from None
        except _NO_CREDENTIALS as exc:
            raise StorageMisconfigured(
                f"[storage] S3 credentials: {exc} (set access_key_id and secret_access_key,"
                " or provide them by environment, profile or instance role)",
                key="access_key_id",
            ) from None
        except _UNREACHABLE as exc:
            raise StorageUnavailable(
                f"cannot {_what(action, path)} at S3 endpoint {self.endpoint_url}"
                f" (endpoint_url): {type(exc).__name__}: {exc}"
            ) from None
        except (BotoCoreError, Boto3Error, CancelledError) as exc:
            raise StorageError(f"S3: cannot {_what(action, path)}: {exc}") from None
        except OSError as exc:  # reading the caller's file, or a socket error below urllib3
            raise StorageUnavailable(f"cannot {_what(action, path)}: {exc}") from None
        except Exception as exc:
            if type(exc).__module__.split(".")[0] in (
                "s3transfer",
                "botocore",
                "boto3",
            ):
                raise StorageError(f"S3: cannot {_what(action, path)}: {exc}") from None
            raise

    def _client_error(self, exc: ClientError, action: str, path: str | None) -> StorageError:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = _status(exc)
        where = f"bucket {self.bucket!r} at {self.endpoint_url}"
        if code == "NoSuchBucket" or (path is None and status == 404):
            return StorageMisconfigured(f"[storage] {where} does not exist", key="bucket")
        if path is not None and (code in _NOT_FOUND_CODES or status == 404):
            return NotFound(path)
        if code == "InvalidRange" or status == 416:
            return RangeNotSatisfiable(f"{path}: the range holds no byte of the object")
        if code in _REGION_CODES or status == 301:
            return StorageMisconfigured(
                f"[storage] {where} is in another region than the one configured ({code})",
                key="region",
            )
        if code == "AccessControlListNotSupported":
            return StorageMisconfigured(f"[storage] {where} does not accept ACLs: leave acl unset", key="acl")
        if code.startswith("KMS.") or code == "InvalidEncryptionAlgorithmError":
            return StorageMisconfigured(
                f"[storage] {where} refused server_side_encryption ({code})",
                key="server_side_encryption",
            )
        if code in _CREDENTIAL_CODES or status == 403:
            return StorageMisconfigured(
                f"[storage] {where} refused to {action} ({code}): check access_key_id and"
                " secret_access_key, and that they are allowed to use the bucket",
                key="access_key_id",
            )
        if code in _TRANSIENT_CODES or (status or 0) >= 500:
            return StorageUnavailable(f"S3 {where}: cannot {_what(action, path)} ({code})")
        return StorageError(f"S3 {where}: cannot {_what(action, path)}: {exc}")


def _what(action: str, path: str | None) -> str:
    return f"{action} {path}" if path else action


def _status(exc: ClientError) -> int | None:
    return exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")


def _aware(moment: datetime.datetime | None) -> datetime.datetime | None:
    """A time from the listing, in UTC if the store gave none."""
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=datetime.timezone.utc)
    return moment


def _etag(value: str | None) -> str | None:
    return value.strip('"') if value else None
