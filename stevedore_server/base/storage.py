"""Model files by URI: a local path as it is, a remote artifact downloaded once into a cache.

``fetch(uri, cache_dir, sha256)`` is the one way in. A local path or ``file://`` URI is checked and returned as
it is; ``http(s)://`` is downloaded with httpx; ``s3://``, ``gs://``, ``az://`` and ``hf://`` go through fsspec
when the package of their extra is installed (``s3`` honours ``AWS_ENDPOINT_URL`` and the credentials boto
reads, and KServe's ``S3_ENDPOINT`` variables). A URI may name a file or a folder (every object under a prefix).

The cache holds, per URI, in ``cache_dir/<sha256 of the URI>/``:

- ``<content sha256>/<name>``: the downloaded file, or folder (hashed over its files' paths and hashes);
- ``current``: ``<content sha256>/<name>``, what the URI resolved to last, so a restart reads it and makes no
  network access at all (with a pinned ``sha256``, the pinned copy is looked up and re-hashed instead);
- ``.partial-*``: a download under way. It is hashed while written, checked against the pin, and renamed whole
  into place: a partial or wrong download never becomes a model;
- ``.lock``: held while fetching, so the worker processes of one model download once (the renames alone would
  keep them safe, not spare the second download).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from stevedore_server.base.errors import ArtifactError

try:
    import fcntl
except ImportError:  # pragma: no cover (Windows: renames keep fetches safe; two processes may both download)
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger("stevedore.storage")

#: Seconds a network read may wait for data before the fetch fails: a hung server must not hang startup.
READ_TIMEOUT = 60.0
#: Seconds to open a connection.
CONNECT_TIMEOUT = 10.0
#: Bytes read, hashed and written at a time.
CHUNK_SIZE = 1 << 20
#: Schemes served by fsspec, and the extra of ours that installs each one's package.
EXTRAS = {"s3": "s3", "gs": "gcs", "gcs": "gcs", "az": "azure", "abfs": "azure", "hf": "hf"}
HTTP_SCHEMES = ("http", "https")
#: The name of a download whose URI names none (``https://host/``).
DEFAULT_NAME = "artifact"
_SHA256 = re.compile(r"[0-9a-f]{64}")


def fetch(uri: str, cache_dir: Path, sha256: str | None = None) -> Path:
    """The local path of the file or folder ``uri`` names: a local one as it is, a remote one from the cache,
    downloaded first if it is not there. Raises ``ArtifactError`` with the reason."""
    pin = _pin(uri, sha256)
    scheme = _scheme(uri)
    if scheme in ("", "file"):
        return _local(uri, pin)
    if scheme not in HTTP_SCHEMES and scheme not in EXTRAS:
        known = "a local path, file://, http(s)://, " + ", ".join(f"{name}://" for name in EXTRAS)
        raise ArtifactError(f"unknown scheme {scheme!r} in {public(uri)}: give {known}")
    entry = _Entry(cache_dir / hashlib.sha256(uri.encode()).hexdigest(), _name_of(uri), uri)
    cached = entry.cached(pin)  # first without the lock: a read-only cache filled beforehand serves too
    if cached is not None:
        return cached
    with entry.locked():
        cached = entry.cached(pin)  # another process may have fetched it while this one waited
        if cached is not None:
            return cached
        return entry.download(scheme, pin)


def public(uri: str) -> str:
    """The URI as a message may show it: no user or password, no query (a signed URL's signature)."""
    parts = urlsplit(uri)
    if len(parts.scheme) <= 1:  # a local path (or a Windows drive letter)
        return uri
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "..." if parts.query else "", ""))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(CHUNK_SIZE):
            digest.update(chunk)
    return digest.hexdigest()


# -- local files ----------------------------------------------------------------------------------------------


def _local(uri: str, pin: str | None) -> Path:
    path = _local_path(uri)
    try:
        if path.is_dir():
            os.listdir(path)  # readable (os.access says yes to root even where a network mount says no)
            if pin:
                raise ArtifactError(f"sha256 pins a file, {uri} is a folder")
            return path
        digest = file_sha256(path) if pin else None
        if not pin:
            path.open("rb").close()
    except FileNotFoundError:
        raise ArtifactError(f"no such file or folder: {uri}") from None
    except PermissionError:
        raise ArtifactError(f"cannot read {uri}: permission denied") from None
    except OSError as error:
        raise ArtifactError(f"cannot read {uri}: {error.strerror or error}") from None
    _check_pin(uri, pin, digest)
    return path


def _local_path(uri: str) -> Path:
    parts = urlsplit(uri)
    if parts.scheme.lower() != "file":
        return Path(uri)
    if parts.netloc not in ("", "localhost"):
        raise ArtifactError(f"a file:// URI names this machine's files, not host {parts.netloc!r}: {uri}")
    return Path(unquote(parts.path))


# -- the cache ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Entry:
    """The cache of one URI: its folder, and the name its file or folder keeps there."""

    root: Path
    name: str
    uri: str

    def cached(self, pin: str | None) -> Path | None:
        """The cached copy to serve, without any network access; None to download."""
        if pin is None:
            return self._current()
        path = self.root / pin / self.name
        if not path.exists():
            return None
        if path.is_dir():
            raise ArtifactError(f"sha256 pins a file, {public(self.uri)} is a folder")
        if file_sha256(path) == pin:
            return path
        logger.warning(
            "The cached copy of %s is not its sha256 %s any more: downloading it again", public(self.uri), pin
        )
        shutil.rmtree(self.root / pin, ignore_errors=True)
        return None

    def _current(self) -> Path | None:
        try:
            relative = (self.root / "current").read_text().strip()
        except (FileNotFoundError, NotADirectoryError):
            return None
        path = self.root / relative
        if not relative or not path.exists():
            return None
        logger.info(
            "%s: serving the copy downloaded before (content sha256 %s, in %s); delete that folder, or pin the "
            "model's sha256, to serve what the URI holds now", public(self.uri), relative.partition("/")[0], self.root,
        )  # fmt: skip
        return path

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            lock = (self.root / ".lock").open("a")
        except OSError as error:
            raise ArtifactError(f"cannot write the model cache {self.root.parent}: {error.strerror or error}") from None
        with lock:
            if fcntl is not None:
                fcntl.flock(lock, fcntl.LOCK_EX)
            yield  # closing the file releases the lock

    def download(self, scheme: str, pin: str | None) -> Path:
        """Download into a partial folder, check the pin, rename it into place and make it current."""
        for stale in self.root.glob(".partial-*"):  # a process that died mid-download (the lock is ours now)
            shutil.rmtree(stale, ignore_errors=True)
        partial = Path(tempfile.mkdtemp(prefix=".partial-", dir=self.root))
        started = time.monotonic()
        try:
            if scheme in HTTP_SCHEMES:
                digest = _download_http(self.uri, partial / self.name)
            else:
                digest = _download_fsspec(self.uri, scheme, partial / self.name, pin)
            _check_pin(public(self.uri), pin, digest)
            _settle(partial, self.root / digest)
        except OSError as error:  # the cache's disk: full, read-only (the network's errors are ArtifactErrors)
            where = self.root.parent
            raise ArtifactError(f"cannot store {public(self.uri)} in {where}: {error.strerror or error}") from None
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        self._make_current(f"{digest}/{self.name}")
        logger.info("Downloaded %s (sha256 %s) in %.1f s", public(self.uri), digest, time.monotonic() - started)
        return self.root / digest / self.name

    def _make_current(self, relative: str) -> None:
        descriptor, temporary = tempfile.mkstemp(prefix=".current-", dir=self.root)
        with os.fdopen(descriptor, "w") as out:
            out.write(relative + "\n")
        os.replace(temporary, self.root / "current")
        (self.root / "uri").write_text(public(self.uri) + "\n")  # for a person looking into the cache


def _settle(partial: Path, target: Path) -> None:
    """Rename a complete download into place; the same content put there first (another process) stays."""
    try:
        partial.rename(target)
    except OSError:
        if not target.is_dir():
            raise


def _check_pin(uri: str, pin: str | None, digest: str | None) -> None:
    if pin and digest != pin:
        raise ArtifactError(f"sha256 mismatch for {uri}: expected {pin}, got {digest}")


def _pin(uri: str, sha256: str | None) -> str | None:
    if sha256 is None:
        return None
    pin = sha256.strip().lower()
    if not _SHA256.fullmatch(pin):
        raise ArtifactError(f"the sha256 of {public(uri)} is not 64 hexadecimal digits: {sha256[:80]!r}")
    return pin


def _scheme(uri: str) -> str:
    scheme = urlsplit(uri).scheme.lower()
    return "" if len(scheme) == 1 else scheme  # C:\models is a path


def _name_of(uri: str) -> str:
    """The last segment of the URI's path (a runtime recognises its files by name), else the bucket's."""
    parts = urlsplit(uri)
    name = PurePosixPath(unquote(parts.path).rstrip("/")).name or parts.netloc.rpartition("@")[2]
    name = name.replace("\\", "_").replace("\0", "_")
    return DEFAULT_NAME if name in ("", ".", "..") or name.startswith(".partial-") else name


def _write(chunks: Iterable[bytes], target: Path) -> tuple[str, int]:
    """Write and hash ``chunks`` into the new file ``target``: its sha256 and size."""
    digest, size = hashlib.sha256(), 0
    with target.open("xb") as out:
        for chunk in chunks:
            digest.update(chunk)
            out.write(chunk)
            size += len(chunk)
        out.flush()
        os.fsync(out.fileno())  # on disk before the rename that makes it a model
    return digest.hexdigest(), size


# -- http(s) --------------------------------------------------------------------------------------------------


def _download_http(uri: str, target: Path) -> str:
    import httpx  # here: a model served from a local file never pays for importing it

    timeout = httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT)
    # identity: the bytes the server holds, so a pinned sha256 is the published file's and the length checks
    headers = {"Accept-Encoding": "identity"}
    try:
        with httpx.stream("GET", uri, headers=headers, timeout=timeout, follow_redirects=True) as response:
            if response.status_code != 200:
                raise ArtifactError(f"{public(uri)} answered {response.status_code} {response.reason_phrase}")
            digest, size = _write(response.iter_raw(CHUNK_SIZE), target)
            expected = response.headers.get("content-length")
    except httpx.TimeoutException:
        raise ArtifactError(f"cannot download {public(uri)}: no answer within {READ_TIMEOUT:g} s") from None
    except (httpx.HTTPError, httpx.InvalidURL) as error:
        raise ArtifactError(f"cannot download {public(uri)}: {_reason(error, uri)}") from None
    if expected is not None and expected.isdigit() and int(expected) != size:
        raise ArtifactError(f"cannot download {public(uri)}: truncated, {size} of {expected} bytes")
    return digest


# -- fsspec: s3, gs, az, hf -----------------------------------------------------------------------------------


def _download_fsspec(uri: str, scheme: str, target: Path, pin: str | None) -> str:
    filesystem, path = _filesystem(uri, scheme)
    try:
        info = filesystem.info(path)
        if info.get("type") == "directory":
            if pin:
                raise ArtifactError(f"sha256 pins a file, {public(uri)} is a folder")
            return _download_folder(filesystem, str(info.get("name", path)), target, uri)
        return _download_object(filesystem, path, int(info.get("size") or 0), target, uri)
    except ArtifactError:
        raise
    except FileNotFoundError:
        raise ArtifactError(f"no such file or folder: {public(uri)}") from None
    except PermissionError as error:
        raise ArtifactError(f"cannot read {public(uri)}: access denied ({_reason(error, uri)})") from None
    except Exception as error:  # each store raises its own: the message says which and why
        raise ArtifactError(f"cannot download {public(uri)}: {_reason(error, uri)}") from None


def _filesystem(uri: str, scheme: str) -> tuple[Any, str]:
    import fsspec  # here: a model served from a local file never pays for importing it

    try:
        fsspec.get_filesystem_class(scheme)
    except ImportError:
        extra = EXTRAS[scheme]
        raise ArtifactError(f"{public(uri)} needs the {extra} extra: pip install 'stevedore-server[{extra}]'") from None
    options = _s3_options() if scheme == "s3" else {}
    # A fresh instance: fsspec's cached ones keep directory listings that would hide a changed folder.
    filesystem, path = fsspec.core.url_to_fs(uri, skip_instance_cache=True, **options)
    return filesystem, path


def _s3_options() -> dict[str, Any]:
    """s3fs's options from the environment, as boto and KServe's storage initializer read it."""
    config = {
        "connect_timeout": CONNECT_TIMEOUT,
        "read_timeout": READ_TIMEOUT,
        "retries": {"max_attempts": 2, "mode": "standard"},
    }
    options: dict[str, Any] = {"config_kwargs": config, "use_listings_cache": False}
    # botocore from 1.31 reads AWS_ENDPOINT_URL itself; older ones do not, and KServe's S3_ENDPOINT none does.
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if not endpoint and os.environ.get("S3_ENDPOINT"):
        secure = os.environ.get("S3_USE_HTTPS", "1") != "0"
        endpoint = ("https://" if secure else "http://") + os.environ["S3_ENDPOINT"].removeprefix("//")
    if endpoint:
        options["endpoint_url"] = endpoint
    if os.environ.get("S3_VERIFY_SSL") == "0":
        options["client_kwargs"] = {"verify": False}
    if os.environ.get("awsAnonymousCredential", "").lower() == "true":
        options["anon"] = True
    return options


def _download_object(filesystem: Any, path: str, size: int, target: Path, uri: str) -> str:
    with filesystem.open(path, "rb") as source:
        digest, written = _write(iter(lambda: source.read(CHUNK_SIZE), b""), target)
    if written != size:
        raise ArtifactError(f"cannot download {public(uri)}: truncated, {written} of {size} bytes")
    return digest


def _download_folder(filesystem: Any, root: str, target: Path, uri: str) -> str:
    """Every object under ``root`` into the folder ``target``: the folder's hash, of its paths and files' hashes."""
    root = root.rstrip("/")
    listing = filesystem.find(root, detail=True)
    tree = hashlib.sha256()
    for path, info in sorted(listing.items()):
        relative = path[len(root) :].strip("/")
        if info.get("type") == "directory" or path.endswith("/") or not relative:
            continue  # a folder marker object
        parts = PurePosixPath(relative).parts
        if ".." in parts:
            raise ArtifactError(f"cannot download {public(uri)}: it holds an unsafe name {relative!r}")
        destination = target.joinpath(*parts)
        destination.parent.mkdir(parents=True, exist_ok=True)
        digest = _download_object(filesystem, path, int(info.get("size") or 0), destination, f"{uri}/{relative}")
        tree.update(f"{relative}\0{digest}\n".encode())
    if not target.is_dir():
        raise ArtifactError(f"no such file or folder: {public(uri)} (no object under it)")
    return tree.hexdigest()


def _reason(error: BaseException, uri: str) -> str:
    """An exception's message on one line, any copy of the URI in it without credentials."""
    message = " ".join(str(error).split()) or type(error).__name__
    return message.replace(uri, public(uri))
