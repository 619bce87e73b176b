"""The claim-check blob store: every blob (uploaded segments, clip frames, the join's window manifests) goes through
one interface, `BlobStore`, with two implementations:

- `LocalBlobStore`: a directory (`DRIVECOACH_BLOB_DIR`, default `$DRIVECOACH_HOME/blobs`); claim checks `file://`;
- `S3BlobStore`: a bucket and key prefix of an S3-API store (`DRIVECOACH_BLOB_URL=s3://bucket/prefix`, and
  `DRIVECOACH_S3_ENDPOINT_URL` for MinIO, Ceph, R2 or a test server; empty = AWS); claim checks `s3://bucket/key`.

`open_blob_store(settings)` picks one; `open_blob_store_at(store.spec, store.endpoint)` reopens the same store in a
pool process (two strings pickle; a client does not). Credentials come only from the AWS SDK's own chain (the
environment's `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN`, `AWS_REGION`, a role), never from
the settings.

The S3 client is boto3: the reference SDK (the most-downloaded package on PyPI), whose PutObject takes
`IfNoneMatch="*"` (immutable uploads without a read-then-write race), whose presigned GET/PUT URLs let OpenCV and
devices talk to the store directly, and which moto (the test server) is built against; obstore and minio would do
the same with a smaller, less used client, and s3fs is a filesystem layer over aiobotocore we do not need.

Guarantees, the same on both: `put_file` / `put_bytes(..., immutable=True)` never replace a blob (the same bytes
again are a no-op, different bytes raise BlobConflict); `put_bytes` overwrites (frames blobs, window manifests);
a missing blob, or a URI of another scheme or bucket, is BlobNotFound (a dead letter upstream); a store that cannot
be reached or refuses the credentials is BlobUnavailable (never a dead letter: the process stops or retries).
Videos are decoded where they lie: `video_source` gives the local path, or a presigned GET URL that OpenCV's FFmpeg
backend reads with HTTP range requests (measured against moto's server: it seeks with 206 responses, no copy).
"""

from __future__ import annotations

import filecmp
import hashlib
import io
import os
import shutil
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, closing, contextmanager
from functools import lru_cache
from pathlib import Path, PosixPath
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import urlparse

from schemas.claim_checks import s3_client
from streams.errors import DrivecoachError

if TYPE_CHECKING:
    from streams.settings import Settings

CHUNK = 1 << 20
VIDEO_URL_EXPIRES_S = 3600  # a presigned GET for a decode: one clip build or probe, with room for a slow one


class BlobNotFound(DrivecoachError):
    """A claim check points at a blob that is not there (or at another store: another scheme or bucket)."""


class BlobConflict(DrivecoachError):
    """An upload would replace a different blob under the same key: claim checks must stay immutable."""


class BlobUnavailable(DrivecoachError):
    """The store did not answer, or refused the credentials: not the blob's fault, so never a dead letter."""


class BlobStore(ABC):
    """Where blobs live. Keys are relative (`uploads/veh-1/seg.mp4`); URIs are the claim checks messages carry."""

    spec: str  # with `endpoint`, what `open_blob_store_at` reopens this store from (in a pool process)
    endpoint: str = ""
    remote = False  # each call a network round trip: callers with many run them side by side

    @abstractmethod
    def uri(self, key: str) -> str:
        """The claim check of `key` (whether or not it exists)."""

    @abstractmethod
    def put_bytes(self, key: str, data: bytes, *, immutable: bool = False) -> str:
        """Write `data` under `key` and return its URI; a reader never sees half a blob. Overwrites, unless
        `immutable`: then the same bytes again are a no-op and different bytes raise BlobConflict."""

    @abstractmethod
    def put_file(self, key: str, source: Path) -> str:
        """Upload a file once: the same bytes again are a no-op, different bytes under the key raise BlobConflict."""

    @abstractmethod
    def check(self, uri: str) -> None:
        """BlobNotFound unless `uri` names a blob of this store that exists."""

    @abstractmethod
    def get_bytes(self, uri: str) -> bytes:
        """The blob's bytes (frames, manifests: small); BlobNotFound when it is not there."""

    @abstractmethod
    def version(self, uri: str) -> str:
        """A token that changes when the blob is rewritten (a cache key); BlobNotFound when it is not there."""

    @abstractmethod
    def size(self, uri: str) -> int:
        """The blob's length in bytes; BlobNotFound when it is not there."""

    @abstractmethod
    def read_range(self, uri: str, start: int, length: int) -> bytes:
        """`length` bytes from `start` (fewer at the end): what an HTTP range request of a video asks for, so a
        player never downloads a whole segment to show a few seconds of it."""

    @abstractmethod
    def video_source(self, uri: str) -> AbstractContextManager[Path]:
        """A context manager giving a Path that `cv2.VideoCapture(str(path))` opens: the file itself, or a
        presigned URL dressed as a path (OpenCV streams it with range requests). Existence is not checked."""

    @abstractmethod
    def delete_prefix(self, prefix: str) -> int:
        """Delete every blob whose key starts with `prefix` (e.g. `windows/`); returns how many."""

    @abstractmethod
    def list_keys(self, prefix: str) -> list[str]:
        """The keys of every blob whose key starts with `prefix`, sorted (one listing; a directory's entries)."""

    @abstractmethod
    def delete(self, uri: str) -> bool:
        """Delete the blob `uri` names; False when it was not there (deleted before: retention re-runs rely on it).
        A URI of another store (scheme, bucket, or a path outside the directory) raises BlobNotFound."""

    def get_key(self, key: str) -> bytes | None:
        """The blob under `key`, or None when there is none."""
        try:
            return self.get_bytes(self.uri(key))
        except BlobNotFound:
            return None


# --- a local directory -------------------------------------------------------------------------------------------


class LocalBlobStore(BlobStore):
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.spec = str(self.root)

    def uri(self, key: str) -> str:
        return (self.root / key).as_uri()

    def put_bytes(self, key: str, data: bytes, *, immutable: bool = False) -> str:
        """Write atomically (temp file + rename) so a reader never sees half a blob."""
        path = self.root / key
        if immutable and path.is_file():
            if path.read_bytes() == data:
                return path.as_uri()
            raise BlobConflict(f"blob {key} exists with different content; uploads need unique keys")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
        return path.as_uri()

    def put_file(self, key: str, source: Path) -> str:
        path = self.root / key
        if path.is_file():
            if filecmp.cmp(path, source, shallow=False):
                return path.as_uri()
            raise BlobConflict(f"blob {key} exists with different content; uploads need unique keys")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        shutil.copyfile(source, tmp)
        tmp.replace(path)
        return path.as_uri()

    def path(self, uri: str) -> Path:
        parsed = urlparse(uri)
        if parsed.scheme != "file":
            raise BlobNotFound(
                f"unsupported blob URI scheme {parsed.scheme!r} in {uri}: this store is the directory {self.root}"
            )
        path = Path(parsed.path)
        if not path.is_file():
            raise BlobNotFound(f"blob {uri} does not exist")
        return path

    def check(self, uri: str) -> None:
        self.path(uri)

    def get_bytes(self, uri: str) -> bytes:
        try:
            return self.path(uri).read_bytes()
        except FileNotFoundError as err:  # deleted between the check and the read
            raise BlobNotFound(f"blob {uri} does not exist") from err

    def version(self, uri: str) -> str:
        stat = self.path(uri).stat()
        return f"{stat.st_mtime_ns}-{stat.st_size}"

    def size(self, uri: str) -> int:
        return self.path(uri).stat().st_size

    def read_range(self, uri: str, start: int, length: int) -> bytes:
        try:
            with self.path(uri).open("rb") as f:
                f.seek(start)
                return f.read(length)
        except FileNotFoundError as err:
            raise BlobNotFound(f"blob {uri} does not exist") from err

    @contextmanager
    def video_source(self, uri: str) -> Iterator[Path]:
        parsed = urlparse(uri)
        if parsed.scheme != "file":
            self.path(uri)  # raises, naming the scheme
        yield Path(parsed.path)

    def list_keys(self, prefix: str) -> list[str]:
        directory, _, start = prefix.rpartition("/")
        top = self.root / directory
        if not top.is_dir():
            return []
        found = []
        for entry in top.iterdir():
            # `.name.pid.tmp` is a write under way (put_bytes), not a blob yet
            if not entry.name.startswith(start) or entry.name.startswith("."):
                continue
            files = [p for p in entry.rglob("*") if p.is_file()] if entry.is_dir() else [entry]
            found += [p.relative_to(self.root).as_posix() for p in files]
        return sorted(found)

    def delete(self, uri: str) -> bool:
        parsed = urlparse(uri)
        path = Path(parsed.path).resolve() if parsed.scheme == "file" else None
        if path is None or not path.is_relative_to(self.root):
            raise BlobNotFound(f"blob {uri} is not in this store (the directory {self.root})")
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        return True

    def delete_prefix(self, prefix: str) -> int:
        top = self.root / prefix.rpartition("/")[0]  # the deepest directory the prefix covers whole
        if not top.is_dir():
            return 0
        count = 0
        for path in sorted([top, *top.rglob("*")], reverse=True):  # children before their directory
            key = path.relative_to(self.root).as_posix()
            if path.is_file() and key.startswith(prefix):
                path.unlink(missing_ok=True)
                count += 1
            elif (
                path.is_dir()
                and path != self.root
                and f"{key}/".startswith(prefix)
                and not any(path.iterdir())
            ):
                path.rmdir()
        return count


# --- an S3-API bucket --------------------------------------------------------------------------------------------


class PresignedVideo(PosixPath):
    """A presigned GET URL for decoders that take a Path and open `str(path)`: `str()` and `os.fspath()` give the
    URL (OpenCV's FFmpeg backend reads http(s) with range requests), `.name` the object's name for messages, and
    `repr()` the key only, so a log line never carries the signature."""

    url = ""

    def __str__(self) -> str:
        return self.url or super().__str__()

    def __repr__(self) -> str:
        return f"PresignedVideo({super().__str__()!r})"


class S3BlobStore(BlobStore):
    """A bucket and key prefix of an S3-API store (`s3://bucket/prefix`), through boto3."""

    remote = True

    def __init__(self, url: str, endpoint: str = "") -> None:
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ValueError(f"an S3 blob URL is s3://bucket[/prefix], not {url!r}")
        self.bucket, self.prefix = parsed.netloc, parsed.path.strip("/")
        self.endpoint = endpoint
        self.spec = f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"
        self.client = s3_client(endpoint)

    def __repr__(self) -> str:
        return f"S3BlobStore({self.spec!r}, endpoint={self.endpoint or 'AWS'!r})"

    def object_key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.object_key(key)}"

    def _key_of(self, uri: str) -> str:
        """The object key a claim check names; BlobNotFound for another scheme or bucket."""
        parsed = urlparse(uri)
        if parsed.scheme != "s3":
            raise BlobNotFound(
                f"unsupported blob URI scheme {parsed.scheme!r} in {uri}: this store is {self.spec}"
            )
        if parsed.netloc != self.bucket:
            raise BlobNotFound(
                f"blob {uri} is in bucket {parsed.netloc!r}: this store reads {self.spec} only"
            )
        key = parsed.path.lstrip("/")
        if not key:
            raise BlobNotFound(f"blob URI {uri} names no object")
        return key

    # writes

    def put_bytes(self, key: str, data: bytes, *, immutable: bool = False) -> str:
        """One PutObject: S3 makes an object visible whole or not at all."""
        if immutable:
            return self._put_once(key, lambda: io.BytesIO(data), hashlib.md5(data, usedforsecurity=False))
        with self._errors(self.uri(key)):
            self.client.put_object(Bucket=self.bucket, Key=self.object_key(key), Body=data)
        return self.uri(key)

    def put_file(self, key: str, source: Path) -> str:
        md5 = hashlib.md5(usedforsecurity=False)
        with source.open("rb") as f:
            for chunk in iter(lambda: f.read(CHUNK), b""):
                md5.update(chunk)
        return self._put_once(key, lambda: source.open("rb"), md5)

    def _put_once(self, key: str, body: Callable[[], BinaryIO], md5: Any) -> str:
        """A conditional PutObject (`If-None-Match: *`): S3 refuses it with 412 when the key exists, atomically.
        Then the ETag (the MD5 of a single-part upload) decides; when it differs (multipart or KMS-encrypted objects
        have other ETags) the stored object is read and compared."""
        from botocore.exceptions import ClientError

        uri, object_key = self.uri(key), self.object_key(key)
        for attempt in range(3):
            try:
                with body() as payload, self._errors(uri, passthrough=_CONDITION_FAILED):
                    self.client.put_object(Bucket=self.bucket, Key=object_key, Body=payload, IfNoneMatch="*")
                return uri
            except ClientError as err:  # only the two conditional answers get here
                if _code(err) == "PreconditionFailed":
                    break
                time.sleep(0.2 * 2**attempt)  # ConditionalRequestConflict: a concurrent upload; S3 says retry
        else:
            raise BlobUnavailable(f"concurrent uploads of {uri} kept conflicting (409)")
        with self._errors(uri):
            etag = str(self.client.head_object(Bucket=self.bucket, Key=object_key).get("ETag", ""))
        if etag.strip('"') == md5.hexdigest() or self._same_content(object_key, body, uri):
            return uri
        raise BlobConflict(f"blob {key} exists with different content; uploads need unique keys")

    def _same_content(self, object_key: str, body: Callable[[], BinaryIO], uri: str) -> bool:
        with self._errors(uri):
            stored = self.client.get_object(Bucket=self.bucket, Key=object_key)["Body"]
            with body() as mine, closing(stored):
                for theirs in iter(lambda: stored.read(CHUNK), b""):
                    if mine.read(len(theirs)) != theirs:
                        return False
                return mine.read(1) == b""

    # reads

    def check(self, uri: str) -> None:
        key = self._key_of(uri)
        with self._errors(uri):
            self.client.head_object(Bucket=self.bucket, Key=key)

    def get_bytes(self, uri: str) -> bytes:
        key = self._key_of(uri)
        with self._errors(uri):
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
            try:
                return body.read()
            finally:
                body.close()

    def version(self, uri: str) -> str:
        key = self._key_of(uri)
        with self._errors(uri):
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        return f"{head.get('ETag', '')}-{head.get('LastModified', '')}"

    def size(self, uri: str) -> int:
        key = self._key_of(uri)
        with self._errors(uri):
            return int(self.client.head_object(Bucket=self.bucket, Key=key)["ContentLength"])

    def read_range(self, uri: str, start: int, length: int) -> bytes:
        if length <= 0:
            return b""
        key = self._key_of(uri)
        with self._errors(uri):
            body = self.client.get_object(
                Bucket=self.bucket, Key=key, Range=f"bytes={start}-{start + length - 1}"
            )["Body"]
            try:
                return body.read()
            finally:
                body.close()

    def presign_get(self, uri: str, expires_s: int = VIDEO_URL_EXPIRES_S) -> str:
        """A GET URL anyone holding it can read the blob with until it expires (no request is made here)."""
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self._key_of(uri)}, ExpiresIn=expires_s
        )

    @contextmanager
    def video_source(self, uri: str) -> Iterator[Path]:
        video = PresignedVideo(self._key_of(uri))
        video.url = self.presign_get(uri)
        yield video

    def presign_put(self, key: str, expires_s: int = 3600) -> tuple[str, str]:
        """For a device: a URL to PUT one segment's bytes to (plain HTTP PUT, body = the file), and the claim check
        to publish once the PUT answered 200."""
        url = self.client.generate_presigned_url(
            "put_object", Params={"Bucket": self.bucket, "Key": self.object_key(key)}, ExpiresIn=expires_s
        )
        return url, self.uri(key)

    def list_keys(self, prefix: str) -> list[str]:
        keys: list[str] = []
        strip = len(self.object_key(""))
        paginator = self.client.get_paginator("list_objects_v2")
        with self._errors(self.uri(prefix)):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.object_key(prefix)):
                keys += [o["Key"][strip:] for o in page.get("Contents", [])]
        return sorted(keys)

    def delete(self, uri: str) -> bool:
        """HEAD, then DELETE (which answers 204 whether or not the object was there)."""
        key = self._key_of(uri)
        try:
            self.check(uri)
        except BlobNotFound:
            return False
        with self._errors(uri):
            self.client.delete_object(Bucket=self.bucket, Key=key)
        return True

    def delete_prefix(self, prefix: str) -> int:
        count = 0
        paginator = self.client.get_paginator("list_objects_v2")
        with self._errors(self.uri(prefix)):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.object_key(prefix)):
                keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                if keys:
                    self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True})
                    count += len(keys)
        return count

    @contextmanager
    def _errors(self, uri: str, passthrough: tuple[str, ...] = ()) -> Iterator[None]:
        """boto3's errors as ours: a missing object is BlobNotFound; anything else the store's fault."""
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        where = f"the S3 store at {self.endpoint or 'AWS'}"
        try:
            yield
        except ClientError as err:
            code = _code(err)
            if code in passthrough:
                raise
            if code in ("NoSuchKey", "404", "NotFound"):
                raise BlobNotFound(f"blob {uri} does not exist") from err
            if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken"):
                raise BlobUnavailable(
                    f"{where} refused access to {uri} ({code}): check the AWS credentials and their permissions "
                    "(without s3:ListBucket a missing object also answers 403)"
                ) from err
            if code == "NoSuchBucket":
                raise BlobUnavailable(f"{where} has no bucket {self.bucket!r} ({uri})") from err
            raise BlobUnavailable(f"{where} failed on {uri}: {code}: {err}") from err
        except NoCredentialsError as err:
            raise BlobUnavailable(
                f"no AWS credentials for {where}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or a role)"
            ) from err
        except BotoCoreError as err:  # connection refused or reset, timeouts: after the client's retries
            raise BlobUnavailable(f"{where} did not answer for {uri}: {err}") from err


_CONDITION_FAILED = ("PreconditionFailed", "ConditionalRequestConflict")


def _code(err: Any) -> str:
    return str(err.response.get("Error", {}).get("Code", ""))


# --- which store -------------------------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def open_blob_store_at(spec: str, endpoint: str = "") -> BlobStore:
    """The store a spec names: `s3://bucket[/prefix]` (at `endpoint`, empty = AWS), else a directory (a path or a
    `file://` URL). Cached per process: a pool process opens its client once, not per task."""
    if spec.startswith("s3://"):
        return S3BlobStore(spec, endpoint)
    parsed = urlparse(spec)
    if parsed.scheme == "file":
        return LocalBlobStore(Path(parsed.path))
    if parsed.scheme and len(parsed.scheme) > 1:  # not a Windows drive letter
        raise ValueError(f"a blob store is a directory, file:// or s3:// URL, not {spec!r}")
    return LocalBlobStore(Path(spec))


def blob_spec(settings: Settings) -> str:
    """The configured store as a spec for `open_blob_store_at` (with `settings.s3_endpoint_url`)."""
    return settings.blob_url or str(settings.blobs.resolve())


def open_blob_store(settings: Settings) -> BlobStore:
    """The configured store: `blob_url` (s3://bucket/prefix), else the directory `blob_dir` ($home/blobs)."""
    spec = blob_spec(settings)
    return open_blob_store_at(spec, settings.s3_endpoint_url if spec.startswith("s3://") else "")


def content_key(prefix: str, data: bytes, suffix: str) -> str:
    return f"{prefix}/{hashlib.sha256(data).hexdigest()[:24]}{suffix}"
