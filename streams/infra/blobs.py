"""The claim-check blob store: a local directory by default; messages carry only `file://` URIs."""

from __future__ import annotations

import filecmp
import hashlib
import os
import shutil
from pathlib import Path
from urllib.parse import urlparse

from streams.errors import DrivecoachError


class BlobNotFound(DrivecoachError):
    """A claim check points at a blob that is not there."""


class BlobConflict(DrivecoachError):
    """An upload would replace a different blob under the same key: claim checks must stay immutable."""


class LocalBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def uri(self, key: str) -> str:
        return (self.root / key).as_uri()

    def put_bytes(self, key: str, data: bytes) -> str:
        """Write atomically (temp file + rename) so a reader never sees half a blob."""
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
        return path.as_uri()

    def put_file(self, key: str, source: Path) -> str:
        """Upload a file once: the same bytes again are a no-op, different bytes under the key an error."""
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
            raise BlobNotFound(f"unsupported blob URI scheme {parsed.scheme!r} in {uri}")
        path = Path(parsed.path)
        if not path.is_file():
            raise BlobNotFound(f"blob {uri} does not exist")
        return path


def content_key(prefix: str, data: bytes, suffix: str) -> str:
    return f"{prefix}/{hashlib.sha256(data).hexdigest()[:24]}{suffix}"
