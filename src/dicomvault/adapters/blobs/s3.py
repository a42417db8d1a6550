"""S3-compatible blob store (AWS S3, MinIO, Ceph RGW, moto): content-addressed objects ``<prefix>/ab/cd/<sha256>``.

Why it looks like this:

* The key is the SHA-256 of the bytes, which is only known after the whole stream was read, so ``put`` first
  spools the stream (small objects in memory, larger ones in an unlinked temporary file: bounded memory) while
  hashing it, then uploads from the spool. The upload carries the SHA-256 as an S3 checksum, so AWS rejects
  corrupted bodies, and the returned checksum (or the ETag, an MD5 we compute too) is compared before ``put``
  returns: ``put`` returns only after a completed, verified PUT.
* Write-once: the upload is conditional (``If-None-Match: *``); a ``412 Precondition Failed`` means the object
  already exists and ``created=False``. Servers without conditional writes (``501``) fall back to HEAD-then-PUT,
  which is still safe because a key can only ever hold the bytes it names.
* Large objects (``multipart_threshold``) go up as a multipart upload with per-part SHA-256 checksums, parts read
  from the spool file with ``pread`` by a few threads (memory ≤ ``concurrency × part_size``). s3transfer's
  TransferManager is not used because it cannot send ``If-None-Match``.
* Transport errors, throttling and 5xx are retried by botocore (``standard`` mode, exponential backoff); what is
  left becomes ``Unavailable`` (front ends answer 0xA700 / 503), a missing key becomes ``NotFound``.

URL: ``s3://bucket/prefix?endpoint=http://127.0.0.1:9000&region=us-east-1``. Optional query parameters:
``profile``, ``addressing_style`` (``path`` by default with a custom endpoint), ``max_attempts`` (5),
``connect_timeout`` (5 s), ``read_timeout`` (60 s), ``multipart_threshold`` (16 MiB), ``part_size`` (8 MiB),
``concurrency`` (4), ``spool_dir``, ``spool_memory`` (1 MiB), ``storage_class`` (the bucket's default, usually
STANDARD). Credentials come from the standard AWS chain (environment, shared config/credentials files, instance
roles), never from the URL, so they never reach logs.

Storage classes and recall: ``storage_class`` is sent with every PUT (single and multipart), so a store can be a
cloud archive (``GLACIER_IR``: read at once, cheaper; ``GLACIER`` / ``DEEP_ARCHIVE``: cheapest, but an object must be
*restored* before a GET). A GET of an archived object that is not restored fails in S3 with ``InvalidObjectState``
(403); the store answers ``NotRestored`` instead (after one HEAD to tell "restore in progress" from "never
requested"), so a front end can say "recall the study" rather than "storage unavailable". The store implements
``ports.blobs.Recallable`` (``restore_state`` from HEAD's storage class, archive status and ``Restore`` header;
``request_restore`` through RestoreObject). Objects of the Intelligent-Tiering archive access tiers behave the
same (HEAD's ``ArchiveStatus``).
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO, TypeVar, cast
from urllib.parse import parse_qs, urlencode, urlparse

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from urllib3.exceptions import HTTPError as Urllib3Error

from dicomvault.adapters.blobs.keys import check_key
from dicomvault.dicom.positioned import Positioned
from dicomvault.domain.errors import DicomVaultError, NotFound, NotRestored, Unavailable
from dicomvault.domain.records import BlobInfo
from dicomvault.ports.blobs import PutResult, RestoreState

log = logging.getLogger(__name__)

MiB = 1 << 20
CHUNK = MiB
_MIN_PART = 5 * MiB  # S3's smallest allowed part (except the last)
_T = TypeVar("_T")

#: S3's storage classes (PutObject ``x-amz-storage-class``); a misspelt class must stop the start-up, not reach AWS.
STORAGE_CLASSES = (
    "STANDARD", "REDUCED_REDUNDANCY", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "GLACIER",
    "DEEP_ARCHIVE", "OUTPOSTS", "GLACIER_IR", "SNOW", "EXPRESS_ONEZONE",
)
#: Classes whose objects must be restored before a GET (GLACIER_IR is read at once: it is not one of them).
ARCHIVE_CLASSES = frozenset({"GLACIER", "DEEP_ARCHIVE"})
#: Intelligent-Tiering tiers (HEAD ``ArchiveStatus``) that need a restore as well.
_ARCHIVE_ACCESS = frozenset({"ARCHIVE_ACCESS", "DEEP_ARCHIVE_ACCESS"})
#: The restore tiers of RestoreObject.
RESTORE_TIERS = ("Expedited", "Standard", "Bulk")
#: ``NotRestored.retry_after``: seconds a client is told to wait. A Standard restore takes 3-5 hours from GLACIER
#: (up to 12 from DEEP_ARCHIVE, Bulk up to 48, Expedited minutes): an hour lets a client poll a handful of times
#: in a typical restore instead of hammering the archive, at the cost of up to an hour's delay after it completes.
RESTORE_RETRY_AFTER = 3600


@dataclass(frozen=True)
class S3Options:
    """Tuning knobs parsed from the storage URL (see the module docstring for defaults)."""

    endpoint: str | None = None
    region: str | None = None
    profile: str | None = None
    addressing_style: str | None = None
    max_attempts: int = 5
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    multipart_threshold: int = 16 * MiB
    part_size: int = 8 * MiB
    concurrency: int = 4
    spool_dir: Path | None = None
    spool_memory: int = MiB
    #: sent with every PUT; None leaves it to the bucket (STANDARD)
    storage_class: str | None = None


def _storage_class(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    name = value.strip().upper()
    if name not in STORAGE_CLASSES:
        raise ValueError(f"unknown s3 storage_class {value!r} (one of {', '.join(STORAGE_CLASSES)})")
    return name


def parse_s3_url(url: str, *, default_spool_dir: Path | None = None) -> tuple[str, str, S3Options]:
    """``s3://bucket/prefix?…`` → (bucket, prefix without slashes, options)."""
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"not an s3://bucket/prefix URL: {url!r}")
    q = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
    known = set(S3Options.__dataclass_fields__)
    unknown = set(q) - known
    if unknown:
        raise ValueError(f"unknown s3 URL parameter(s): {', '.join(sorted(unknown))}")
    spool = q.get("spool_dir")
    opts = S3Options(
        endpoint=q.get("endpoint"),
        region=q.get("region"),
        profile=q.get("profile"),
        addressing_style=q.get("addressing_style") or ("path" if q.get("endpoint") else None),
        max_attempts=int(q.get("max_attempts", 5)),
        connect_timeout=float(q.get("connect_timeout", 5.0)),
        read_timeout=float(q.get("read_timeout", 60.0)),
        multipart_threshold=max(int(q.get("multipart_threshold", 16 * MiB)), _MIN_PART),
        part_size=max(int(q.get("part_size", 8 * MiB)), _MIN_PART),
        concurrency=max(int(q.get("concurrency", 4)), 1),
        spool_dir=Path(spool) if spool else default_spool_dir,
        spool_memory=int(q.get("spool_memory", MiB)),
        storage_class=_storage_class(q.get("storage_class")),
    )
    return parsed.netloc, parsed.path.strip("/"), opts


def _translate(exc: Exception, what: str) -> DicomVaultError:
    """Map a botocore/urllib3 failure to a domain error (after botocore's own retries were spent)."""
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if code in ("404", "NoSuchKey", "NotFound") or (status == 404 and code != "NoSuchBucket"):
            return NotFound(f"{what}: not found")
        if code == "InvalidRange" or status == 416:
            return NotFound(f"{what}: range outside the object")
        return Unavailable(f"object store refused {what}: {code or status}")
    return Unavailable(f"object store unreachable during {what}: {type(exc).__name__}")


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


class S3ObjectReader(Positioned):
    """A seekable, streaming view of one object (wrap in ``io.BufferedReader``).

    Reads stream from one GET; a seek only moves the position and the next read issues a ranged GET from there,
    so pydicom can parse a header without downloading the pixel data. A connection dropped mid-body is resumed
    from the current position (twice), anything else becomes ``Unavailable``.
    """

    def __init__(self, store: S3BlobStore, key: str, first: dict[str, Any]) -> None:
        super().__init__(int(first["ContentLength"]))
        self._store = store
        self._key = key
        self._body: Any = first["Body"]
        self._body_pos = 0
        self.name = store.describe().split("?")[0] + "/" + key  # readers such as pydicom expect a name

    def _reopen(self) -> None:
        self._close_body()
        if self._pos >= self._size:
            return
        resp = self._store._get(self._key, Range=f"bytes={self._pos}-")
        self._body, self._body_pos = resp["Body"], self._pos

    def _close_body(self) -> None:
        if self._body is not None:
            self._body.close()
            self._body = None

    def readinto(self, buffer: Any) -> int:
        want = min(len(buffer), self._size - self._pos)
        if want <= 0:
            return 0
        for attempt in range(3):
            try:
                if self._body is None or self._body_pos != self._pos:
                    self._reopen()
                data = self._body.read(want)
                break
            except (BotoCoreError, Urllib3Error, OSError) as exc:
                self._close_body()
                if attempt == 2:
                    raise _translate(exc, "GET") from exc
        if not data:
            raise Unavailable("object store ended the response early")
        n = len(data)
        memoryview(buffer)[:n] = data
        self._pos += n
        self._body_pos += n
        return n

    def close(self) -> None:
        self._close_body()
        super().close()


class S3BlobStore:
    """Implements ``ports.blobs.BlobStore`` on an S3 bucket (see the module docstring for the design)."""

    def __init__(self, bucket: str, prefix: str = "", options: S3Options | None = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.options = options or S3Options()
        o = self.options
        session = boto3.session.Session(profile_name=o.profile) if o.profile else boto3.session.Session()
        config = Config(
            retries={"mode": "standard", "max_attempts": o.max_attempts},
            connect_timeout=o.connect_timeout,
            read_timeout=o.read_timeout,
            max_pool_connections=max(10, o.concurrency * 2),
            s3={"addressing_style": o.addressing_style} if o.addressing_style else None,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        #: the botocore client, public so operators can attach event hooks (metrics, tracing, fault tests)
        self.client: Any = session.client("s3", endpoint_url=o.endpoint, region_name=o.region, config=config)
        self._conditional = True
        if o.spool_dir is not None:
            o.spool_dir.mkdir(parents=True, exist_ok=True)

    @classmethod
    def from_url(cls, url: str, *, default_spool_dir: Path | None = None) -> S3BlobStore:
        bucket, prefix, opts = parse_s3_url(url, default_spool_dir=default_spool_dir)
        return cls(bucket, prefix, opts)

    # -- helpers -----------------------------------------------------------------------------------------------

    def object_key(self, key: str) -> str:
        check_key(key)
        rel = f"{key[:2]}/{key[2:4]}/{key}"
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def _call(self, what: str, fn: Callable[..., _T], **kwargs: Any) -> _T:
        try:
            return fn(**kwargs)
        except (ClientError, BotoCoreError, Urllib3Error) as exc:
            raise _translate(exc, what) from exc

    def describe(self) -> str:
        base = f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"
        query = {k: v for k, v in (("endpoint", self.options.endpoint),
                                   ("storage_class", self.options.storage_class)) if v}
        if query:
            base += "?" + urlencode(query)
        return base

    def _class_args(self) -> dict[str, str]:
        return {"StorageClass": self.options.storage_class} if self.options.storage_class else {}

    def local_path(self, key: str) -> Path | None:
        return None

    # -- writing -----------------------------------------------------------------------------------------------

    def put(self, stream: BinaryIO) -> PutResult:
        digest, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
        size = 0
        with tempfile.SpooledTemporaryFile(
            max_size=self.options.spool_memory,
            dir=str(self.options.spool_dir) if self.options.spool_dir is not None else None,
        ) as spool:
            while chunk := stream.read(CHUNK):
                digest.update(chunk)
                md5.update(chunk)
                spool.write(chunk)
                size += len(chunk)
            key = digest.hexdigest()
            info = BlobInfo(key, size, key)
            multipart = size >= self.options.multipart_threshold
            # A conditional single PUT answers "exists" itself (412); a multipart upload would only learn it at
            # Complete, after sending every part, and a server without conditional writes needs the HEAD.
            if (multipart or not self._conditional) and self.exists(key):
                return PutResult(info, created=False)
            spool.seek(0)
            if multipart:
                created = self._put_multipart(cast(IO[bytes], spool), info, digest.digest())
            else:
                created = self._put_single(cast(IO[bytes], spool), info, digest.digest(), md5.hexdigest())
        return PutResult(info, created=created)

    def _conditional_args(self) -> dict[str, str]:
        return {"IfNoneMatch": "*"} if self._conditional else {}

    def _precondition(self, exc: ClientError) -> str | None:
        """'exists' for 412, 'unsupported' when the server does not implement conditional writes."""
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if code == "PreconditionFailed" or status == 412:
            return "exists"
        if self._conditional and (code == "NotImplemented" or status == 501):
            log.warning("object store does not support conditional writes; using HEAD-then-PUT")
            self._conditional = False
            return "unsupported"
        if code == "ConditionalRequestConflict" or status == 409:
            return "exists"  # a concurrent writer of the same content won the race
        return None

    def _put_single(self, spool: IO[bytes], info: BlobInfo, sha: bytes, md5_hex: str) -> bool:
        name = self.object_key(info.key)
        for _ in range(2):
            spool.seek(0)
            try:
                resp = self.client.put_object(
                    Bucket=self.bucket, Key=name, Body=spool, ContentLength=info.size,
                    ChecksumAlgorithm="SHA256", ChecksumSHA256=_b64(sha), **self._conditional_args(),
                    **self._class_args(),
                )
            except ClientError as exc:
                verdict = self._precondition(exc)
                if verdict == "exists":
                    return False
                if verdict == "unsupported":
                    if self.exists(info.key):
                        return False
                    continue
                raise _translate(exc, "PUT") from exc
            except (BotoCoreError, Urllib3Error) as exc:
                raise _translate(exc, "PUT") from exc
            returned = resp.get("ChecksumSHA256")
            etag = str(resp.get("ETag", "")).strip('"')
            if returned is not None and returned != _b64(sha):
                raise Unavailable("object store returned a different SHA-256 for the uploaded object")
            if returned is None and len(etag) == 32 and etag != md5_hex:
                raise Unavailable("object store returned an ETag that does not match the uploaded bytes")
            if returned is None and etag != md5_hex:
                self._check_size(info)  # nothing content-derived came back: at least confirm the length
            return True
        raise Unavailable("conditional PUT could not be completed")  # pragma: no cover - loop always returns

    def _put_multipart(self, spool: IO[bytes], info: BlobInfo, sha: bytes) -> bool:
        name = self.object_key(info.key)
        part_size = max(self.options.part_size, -(-info.size // 10_000))  # S3 allows at most 10 000 parts
        fd = spool.fileno()  # forces a SpooledTemporaryFile onto disk, so parts can be pread concurrently
        upload = self._call("CreateMultipartUpload", self.client.create_multipart_upload,
                            Bucket=self.bucket, Key=name, ChecksumAlgorithm="SHA256", **self._class_args())
        upload_id = upload["UploadId"]
        offsets = list(range(0, info.size, part_size))

        def send(number: int, offset: int) -> dict[str, Any]:
            body = os.pread(fd, min(part_size, info.size - offset), offset)
            part_sha = hashlib.sha256(body).digest()
            resp = self._call("UploadPart", self.client.upload_part, Bucket=self.bucket, Key=name,
                              UploadId=upload_id, PartNumber=number, Body=body,
                              ChecksumAlgorithm="SHA256", ChecksumSHA256=_b64(part_sha))
            if resp.get("ChecksumSHA256") not in (None, _b64(part_sha)):
                raise Unavailable(f"object store returned a different SHA-256 for part {number}")
            return {"PartNumber": number, "ETag": resp["ETag"], "ChecksumSHA256": _b64(part_sha)}

        try:
            with ThreadPoolExecutor(max_workers=min(self.options.concurrency, len(offsets))) as pool:
                parts = list(pool.map(send, range(1, len(offsets) + 1), offsets))
            composite = _b64(hashlib.sha256(b"".join(base64.b64decode(p["ChecksumSHA256"]) for p in parts)).digest())
            for _ in range(2):
                try:
                    resp = self.client.complete_multipart_upload(
                        Bucket=self.bucket, Key=name, UploadId=upload_id,
                        MultipartUpload={"Parts": parts}, **self._conditional_args(),
                    )
                    break
                except ClientError as exc:
                    verdict = self._precondition(exc)
                    if verdict == "exists":
                        self._abort(name, upload_id)
                        return False
                    if verdict != "unsupported":
                        raise _translate(exc, "CompleteMultipartUpload") from exc
                except (BotoCoreError, Urllib3Error) as exc:
                    raise _translate(exc, "CompleteMultipartUpload") from exc
        except BaseException:
            self._abort(name, upload_id)
            raise
        returned = resp.get("ChecksumSHA256")
        if returned is not None and returned.split("-")[0] != composite:
            raise Unavailable("object store returned a different composite SHA-256 for the uploaded object")
        self._check_size(info)
        return True

    def _abort(self, name: str, upload_id: str) -> None:
        """Best effort: an upload left behind is invisible and expires with an AbortIncompleteMultipartUpload rule."""
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=name, UploadId=upload_id)
        except (ClientError, BotoCoreError, Urllib3Error):
            log.warning("could not abort multipart upload %s (the bucket lifecycle rule will)", upload_id)

    def _check_size(self, info: BlobInfo) -> None:
        stored = self.size(info.key)
        if stored != info.size:
            raise Unavailable(f"object store holds {stored} bytes, {info.size} were uploaded")

    # -- reading -----------------------------------------------------------------------------------------------

    def _get(self, key: str, **kwargs: Any) -> dict[str, Any]:
        """GetObject; an archived object that is not restored raises ``NotRestored`` (not ``Unavailable``)."""
        try:
            return cast(dict[str, Any], self.client.get_object(Bucket=self.bucket, Key=self.object_key(key),
                                                               **kwargs))
        except ClientError as exc:
            if _code(exc) == "InvalidObjectState":
                raise self._not_restored(key) from None
            raise _translate(exc, "GET") from exc
        except (BotoCoreError, Urllib3Error) as exc:
            raise _translate(exc, "GET") from exc

    def _not_restored(self, key: str) -> NotRestored:
        try:
            state = self.restore_state(key)
        except DicomVaultError:
            state = RestoreState.ARCHIVED  # the GET said archived; whether a restore runs is only a hint
        what = "its restore is in progress" if state == RestoreState.RESTORING else "recall the study to read it"
        return NotRestored(f"blob {key} is archived on a cold storage class and not restored; {what}",
                           retry_after=RESTORE_RETRY_AFTER, restoring=state == RestoreState.RESTORING)

    def open(self, key: str) -> BinaryIO:
        resp = self._get(key)
        return cast(BinaryIO, io.BufferedReader(S3ObjectReader(self, key, resp), buffer_size=256 * 1024))

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise ValueError("offset and length must not be negative")
        self.object_key(key)  # an invalid key is rejected even for an empty range
        if length == 0:
            return b""
        resp = self._get(key, Range=f"bytes={offset}-{offset + length - 1}")
        try:
            data = cast(bytes, resp["Body"].read())
        except (BotoCoreError, Urllib3Error, OSError) as exc:
            raise _translate(exc, "GET") from exc
        if len(data) != length:
            raise NotFound(f"blob {key} is shorter than {offset + length} bytes")
        return data

    def exists(self, key: str) -> bool:
        check_key(key)  # an invalid key is rejected, not merely absent
        try:
            self._head(key)
        except NotFound:
            return False
        return True

    def _head(self, key: str) -> dict[str, Any]:
        return self._call("HEAD", self.client.head_object, Bucket=self.bucket, Key=self.object_key(key))

    def size(self, key: str) -> int:
        try:
            return int(self._head(key)["ContentLength"])
        except NotFound:
            raise NotFound(f"blob {key} not found") from None

    def delete(self, key: str) -> None:
        self._call("DELETE", self.client.delete_object, Bucket=self.bucket, Key=self.object_key(key))

    def _list(self) -> Iterator[tuple[str, int]]:
        paginator = self.client.get_paginator("list_objects_v2")
        kwargs: dict[str, Any] = {"Bucket": self.bucket}
        if self.prefix:
            kwargs["Prefix"] = self.prefix + "/"
        try:
            for page in paginator.paginate(**kwargs):
                for obj in page.get("Contents", ()):
                    name = str(obj["Key"])
                    key = name.rsplit("/", 1)[-1]
                    if len(key) == 64 and name == self.object_key_or_none(key):
                        yield key, int(obj["Size"])
        except (ClientError, BotoCoreError, Urllib3Error) as exc:
            raise _translate(exc, "LIST") from exc

    def object_key_or_none(self, key: str) -> str | None:
        try:
            return self.object_key(key)
        except NotFound:
            return None

    def iter_keys(self) -> Iterator[str]:
        for key, _ in self._list():
            yield key

    def usage(self) -> tuple[int, int]:
        """(objects, bytes) from one listing, cheaper than a HEAD per key (``storage info``)."""
        count = total = 0
        for _, size in self._list():
            count += 1
            total += size
        return count, total

    # -- archive storage classes (ports.blobs.Recallable) ------------------------------------------------------

    def restore_state(self, key: str) -> RestoreState:
        try:
            head = self._head(key)
        except NotFound:
            raise NotFound(f"blob {key} not found") from None
        return restore_state_of(head)

    def request_restore(self, key: str, *, days: int, tier: str) -> RestoreState:
        """RestoreObject for an archived object that is neither restored nor being restored. The HEAD first keeps
        a repeated recall free (no request, no charge) and answers READABLE for readable classes, which S3 would
        refuse with InvalidObjectState. A concurrent request (RestoreAlreadyInProgress) is not an error."""
        if tier not in RESTORE_TIERS:
            raise ValueError(f"restore tier must be one of {', '.join(RESTORE_TIERS)}, not {tier!r}")
        if days < 1:
            raise ValueError("a restore lasts at least one day")
        try:
            head = self._head(key)
        except NotFound:
            raise NotFound(f"blob {key} not found") from None
        state = restore_state_of(head)
        if state != RestoreState.ARCHIVED:
            return state
        request: dict[str, Any] = {"GlacierJobParameters": {"Tier": tier}}
        if head.get("ArchiveStatus") not in _ARCHIVE_ACCESS:
            request["Days"] = days  # Intelligent-Tiering restores have no expiry: S3 refuses Days for them
        try:
            resp = self.client.restore_object(Bucket=self.bucket, Key=self.object_key(key), RestoreRequest=request)
        except ClientError as exc:
            code = _code(exc)
            if code == "RestoreAlreadyInProgress":
                return RestoreState.RESTORING
            if code == "InvalidObjectState":  # no longer archived (moved by a bucket rule meanwhile)
                return self.restore_state(key)
            raise _translate(exc, "RestoreObject") from exc
        except (BotoCoreError, Urllib3Error) as exc:
            raise _translate(exc, "RestoreObject") from exc
        # 200: a restored copy exists already (its expiry was extended); 202: the restore was accepted.
        status = int(resp.get("ResponseMetadata", {}).get("HTTPStatusCode", 202) or 202)
        log.info("restore of blob %s requested (%s, %d days)", key, tier, days)
        return RestoreState.READABLE if status == 200 else RestoreState.RESTORING


def restore_state_of(head: dict[str, Any]) -> RestoreState:
    """The restore state HeadObject describes: a readable class, or an archived object and its ``Restore``
    header (``ongoing-request="true"`` while restoring, ``ongoing-request="false", expiry-date=…`` once
    restored; absent when never requested or expired)."""
    storage_class = str(head.get("StorageClass") or "STANDARD")
    if storage_class not in ARCHIVE_CLASSES and head.get("ArchiveStatus") not in _ARCHIVE_ACCESS:
        return RestoreState.READABLE
    restore = str(head.get("Restore") or "").replace(" ", "")
    if 'ongoing-request="true"' in restore:
        return RestoreState.RESTORING
    if 'ongoing-request="false"' in restore:
        return RestoreState.READABLE
    return RestoreState.ARCHIVED
