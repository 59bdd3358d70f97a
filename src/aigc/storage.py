"""The artifact store: a workspace's artifacts (datasets, runs, knowledge bases, app models and
settings: :data:`aigc.workspace.ARTIFACTS`) kept under an fsspec URL (a local or shared folder,
``s3://bucket/prefix`` on AWS, MinIO, OSS or any S3-compatible endpoint, ``memory://`` in tests).

Each key (``runs/<name>``, ``kb/<name>``, ``copy/rules.yaml``...: a path under the workspace) is
laid out as::

    <key>/v-<utc>-<hex>/...              the files of one version, uploaded first
    <key>/v-<utc>-<hex>/_COMMITTED.json  its manifest (every file, its size and sha256), written once
                                         all the files are there and listed at the right sizes
    <key>/LATEST                         the manifest of the current version, written last

A reader trusts LATEST only, and LATEST names only a version whose files are all there. So an upload
that dies leaves a version nobody points at (and removes it if it can), and replacing a folder never
shows a reader a mix of two versions: the new files go to a fresh prefix and one small atomic write
switches readers over. Why versions rather than one prefix with a manifest: an object store cannot
rename a folder, and overwriting files in place would let a reader mid-download get half old, half
new. The previous version is kept for readers still downloading it; older committed versions go.

:class:`Mirror` is the workspace's side: which local folders and files are mirrored and when a local
copy is refreshed. This module knows files and keys, nothing of what a dataset or a run holds.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

from aigc.errors import ArtifactStoreError, InvalidInput, NotFound
from aigc.workspace import ARTIFACTS, write_json_atomic

MANIFEST = "_COMMITTED.json"  # in a version folder, and in a local copy (what it was downloaded as)
LATEST = "LATEST"
ENV_S3_ENDPOINT = "AIGC_S3_ENDPOINT"  # an S3-compatible endpoint: MinIO, OSS, Ceph...
ABANDONED = timedelta(days=1)  # an uncommitted version this old was left by a writer that died
# Object stores replace an object whole on write; other file systems need write-then-rename.
WHOLE_OBJECT_WRITES = {"s3", "s3a", "gs", "gcs", "az", "abfs", "memory"}


class _VersionGone(Exception):
    """A file of the version being downloaded is not there (any more)."""


class ArtifactStore:
    """Folders under keys of an fsspec file system, committed atomically (see the module docstring)."""

    def __init__(self, fs: Any, root: str, url: str):
        self.fs, self.root, self.url = fs, root.rstrip("/"), url

    @classmethod
    def from_url(cls, url: str, **options: Any) -> ArtifactStore:
        """``url``: a path, ``file://``, ``s3://bucket/prefix`` or any URL fsspec knows; ``options`` go
        to its file system. For S3 the endpoint comes from ``?endpoint_url=`` or ``$AIGC_S3_ENDPOINT``
        (default: AWS), the credentials from the usual AWS variables or profile."""
        import fsspec

        parts = urlsplit(url)
        query = parse_qs(parts.query)
        endpoint = query.pop("endpoint_url", [None])[0]
        if query:
            raise InvalidInput(f"artifact store {url!r}: unknown URL option(s) {sorted(query)}: only "
                               "endpoint_url is understood")
        protocol = parts.scheme if len(parts.scheme) > 1 else "file"  # "C:" is a drive, not a scheme
        if protocol in ("s3", "s3a"):
            endpoint = endpoint or os.environ.get(ENV_S3_ENDPOINT)
            if endpoint:
                options.setdefault("endpoint_url", endpoint)
        elif endpoint:
            raise InvalidInput(f"artifact store {url!r}: endpoint_url applies to s3:// URLs only")
        if protocol in ("file", "local"):
            options.setdefault("auto_mkdir", True)
        try:
            fs, root = fsspec.core.url_to_fs(urlunsplit(parts._replace(query="")), **options)
        except (ValueError, ImportError) as e:
            raise InvalidInput(f"artifact store {url!r}: {e}: use a folder, s3://bucket/prefix or another "
                               "fsspec URL") from None
        return cls(fs, root, url)

    def __repr__(self) -> str:
        return f"ArtifactStore({self.url!r})"

    # -- reading -------------------------------------------------------------------------

    def manifest(self, key: str) -> dict[str, Any] | None:
        """The committed manifest of ``key`` (one small read), or None when nothing is committed."""
        # A ranged read: one GET on S3, where a whole-object read asks for the size first.
        data = self._call(self.fs.cat_file, self._path(key, LATEST), start=0, missing_ok=True)
        if data is None:
            return None
        try:
            return json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError):  # written whole, so only a damaged store
            raise ArtifactStoreError(f"{self.url}/{key}/{LATEST} is damaged (not JSON): "
                                     f"push {key} again") from None

    def exists(self, key: str) -> bool:
        return self.manifest(key) is not None

    def get_folder(self, key: str, local: Path, tmp_dir: Path | None = None,
                   manifest: dict[str, Any] | None = None) -> dict[str, Any]:
        """Download the committed version of ``key`` into ``local``, replacing what is there; returns
        its manifest, also written as ``local/_COMMITTED.json``.

        Files land in a fresh folder under ``tmp_dir`` (default: beside ``local``), each checked
        against the manifest's size and sha256, and the folder is renamed into place only when all
        passed: ``local`` is never half-downloaded."""
        tmp_dir = tmp_dir or local.parent
        tmp_dir.mkdir(parents=True, exist_ok=True)

        def fetch(version: dict[str, Any]) -> dict[str, Any]:
            self._fetch(key, version, local, tmp_dir)
            return version

        return self._on_newest(key, manifest or self.manifest(key), fetch)

    def read_file(self, key: str, rel: str, manifest: dict[str, Any] | None = None) -> bytes | None:
        """The file ``rel`` of the committed version ``manifest`` names (default: the current one),
        checked against the manifest's size and sha256: one read where :meth:`get_folder` would fetch
        every file, for a listing that needs one small file of each artifact. None when the version
        holds no ``rel``."""
        return self._on_newest(key, manifest or self.manifest(key), lambda v: self._read(key, rel, v))

    def _on_newest(self, key: str, manifest: dict[str, Any] | None,
                   read: Callable[[dict[str, Any]], Any]) -> Any:
        """``read(manifest)``; when that version was collected under it (two newer commits meanwhile),
        once more with the newest."""
        for attempt in (1, 2):
            if manifest is None:
                raise NotFound(f"{key} has no committed copy in the artifact store {self.url}: push it from "
                               "the machine that made it")
            try:
                return read(manifest)
            except _VersionGone:
                stale, manifest = manifest, self.manifest(key)
                if attempt == 2 or (manifest is not None and manifest["version"] == stale["version"]):
                    raise ArtifactStoreError(f"{self.url}/{key}/{stale['version']} lacks files its "
                                             f"manifest lists: the store's copy is damaged; push {key} "
                                             "again") from None

    def _read(self, key: str, rel: str, manifest: dict[str, Any]) -> bytes | None:
        meta = manifest["files"].get(rel)
        if meta is None:
            return None
        try:  # a ranged read, as for LATEST: one GET on S3
            data = self._call(self.fs.cat_file, f"{self._path(key, manifest['version'])}/{rel}", start=0)
        except FileNotFoundError:
            raise _VersionGone(manifest["version"]) from None
        self._check(key, rel, meta, len(data), hashlib.sha256(data).hexdigest())
        return data

    def _fetch(self, key: str, manifest: dict[str, Any], local: Path, tmp_dir: Path) -> None:
        staged = Path(tempfile.mkdtemp(prefix=f"fetch-{local.name}-", dir=tmp_dir))
        try:
            self._download(key, manifest, staged)
            write_json_atomic(staged / MANIFEST, manifest)
            local.parent.mkdir(parents=True, exist_ok=True)
            _install(staged, local, tmp_dir)
        finally:
            shutil.rmtree(staged, ignore_errors=True)

    def _download(self, key: str, manifest: dict[str, Any], into: Path) -> None:
        prefix = self._path(key, manifest["version"])
        for rel, meta in manifest["files"].items():
            dest = into / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                self._call(self.fs.get_file, f"{prefix}/{rel}", str(dest))
            except FileNotFoundError:
                raise _VersionGone(manifest["version"]) from None
            self._check(key, rel, meta, *_size_and_sha256(dest))

    def _check(self, key: str, rel: str, meta: dict[str, Any], size: int, digest: str) -> None:
        if (size, digest) != (meta["size"], meta["sha256"]):
            raise ArtifactStoreError(f"{self.url}/{key}/{rel} does not match its manifest (size {size} "
                                     f"vs {meta['size']}, or its sha256): the store's copy is damaged; "
                                     f"push {key} again")

    # -- writing -------------------------------------------------------------------------

    def put_folder(self, local: Path, key: str) -> dict[str, Any]:
        """Upload ``local`` as the new version of ``key`` and commit it; returns the manifest.

        A failure before the commit (the LATEST write) leaves the previous version current and removes
        what this upload wrote. Hidden entries (``.name``: temporaries of atomic writes) and a local
        ``_COMMITTED.json`` are not uploaded."""
        if not local.is_dir():
            raise InvalidInput(f"{local} is not a folder: nothing to upload to {self.url}/{key}")
        previous = self.manifest(key)  # also the first contact: a missing bucket fails here, before uploading
        version = f"v-{datetime.now(timezone.utc):%Y%m%dT%H%M%S%fZ}-{uuid.uuid4().hex[:8]}"
        files = _describe(local)
        manifest = {"format": 1, "key": key, "version": version, "created_at": _now(),
                    "bytes": sum(f["size"] for f in files.values()), "files": files}
        prefix = self._path(key, version)
        try:
            for rel in files:
                self._call(self.fs.put_file, str(local / rel), f"{prefix}/{rel}")
            self._check_uploaded(key, prefix, files)
            self._write_json(f"{prefix}/{MANIFEST}", manifest)
            self._write_json(self._path(key, LATEST), manifest)
        except BaseException:
            self._abandon(key, version)
            raise
        self._collect(key, keep={version, previous["version"] if previous else version})
        return manifest

    def delete(self, key: str) -> bool:
        """Remove ``key``: LATEST first (readers stop trusting it at once), then every version.
        False when nothing was committed there."""
        had = self.manifest(key) is not None
        self._call(self.fs.rm_file, self._path(key, LATEST), missing_ok=True)
        self.fs.invalidate_cache(self._path(key))
        self._call(self.fs.rm, self._path(key), recursive=True, missing_ok=True)
        return had

    def _check_uploaded(self, key: str, prefix: str, files: dict[str, dict]) -> None:
        """List the new version once and compare names and sizes before committing it."""
        self.fs.invalidate_cache(prefix)
        found = self._call(self.fs.find, prefix, detail=True, missing_ok=True) or {}
        sizes = {path[len(prefix) + 1:]: info["size"] for path, info in found.items()}
        for rel, meta in files.items():
            if sizes.get(rel) != meta["size"]:
                raise ArtifactStoreError(f"uploading {key} to {self.url}: {rel} arrived with "
                                         f"{sizes.get(rel)} bytes of {meta['size']}; nothing was committed, "
                                         "try again")

    def _write_json(self, path: str, obj: Any) -> None:
        data = json.dumps(obj, ensure_ascii=False, indent=1).encode("utf-8")
        if WHOLE_OBJECT_WRITES & set(_protocols(self.fs)):
            self._call(self.fs.pipe_file, path, data)
        else:  # a file system: readers must never see half a file
            tmp = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
            self._call(self.fs.pipe_file, tmp, data)
            self._call(self.fs.mv, tmp, path)

    def _abandon(self, key: str, version: str) -> None:
        """After a failed upload: remove its version, unless LATEST names it (the commit went through and
        only its answer was lost). If the store cannot be asked, leave it to :meth:`_collect`."""
        try:
            latest = self.manifest(key)
            if latest is None or latest["version"] != version:
                self._call(self.fs.rm, self._path(key, version), recursive=True, missing_ok=True)
        except (ArtifactStoreError, OSError):
            pass

    def _collect(self, key: str, keep: set[str]) -> None:
        """Remove the versions no reader needs: committed ones not in ``keep``, and uploads abandoned
        for over a day. Best effort: what a failure leaves is collected after the next commit."""
        base = self._path(key)
        self.fs.invalidate_cache(base)
        try:
            for path in self._call(self.fs.ls, base, detail=False, missing_ok=True) or []:
                name = path.rstrip("/").rsplit("/", 1)[-1]
                if not name.startswith("v-") or name in keep:
                    continue
                if _age(name) > ABANDONED or self._call(self.fs.exists, f"{path}/{MANIFEST}"):
                    self._call(self.fs.rm, path, recursive=True, missing_ok=True)
        except (ArtifactStoreError, OSError):
            pass

    # -- plumbing ------------------------------------------------------------------------

    def _path(self, *parts: str) -> str:
        for part in parts:
            if not part or any(seg in ("", ".", "..") for seg in part.split("/")):
                raise InvalidInput(f"invalid artifact key {part!r}: use names joined by '/'")
        return "/".join([self.root, *parts]) if self.root else "/".join(parts)

    def _call(self, fn: Callable, *args: Any, missing_ok: bool = False, **kwargs: Any) -> Any:
        """One file-system call. Its failure becomes one line (ArtifactStoreError), except a plain
        missing path: None with ``missing_ok``, else FileNotFoundError for the caller."""
        try:
            return fn(*args, **kwargs)
        except ArtifactStoreError:
            raise
        except Exception as e:  # noqa: BLE001 - botocore and other backends raise their own types
            reason = self._reason(e)
            if reason is None:
                if missing_ok:
                    return None
                raise
            raise ArtifactStoreError(reason) from None

    def _reason(self, e: Exception) -> str | None:
        """What went wrong, in one line with the fix; None for a path that is simply not there."""
        where = f"the artifact store {self.url}"
        code = _error_code(e)
        if code == "NoSuchBucket":
            return (f"the bucket of {where} does not exist: create it (e.g. `aws s3 mb s3://BUCKET "
                    f"--endpoint-url ...`) or fix $AIGC_ARTIFACTS")
        if isinstance(e, FileNotFoundError):
            return None
        from botocore.exceptions import (ConnectTimeoutError, EndpointConnectionError, NoCredentialsError,
                                         PartialCredentialsError)

        if isinstance(e, (NoCredentialsError, PartialCredentialsError)):
            return (f"no credentials for {where}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                    "(or AWS_PROFILE)")
        if isinstance(e, PermissionError) or code in ("AccessDenied", "InvalidAccessKeyId",
                                                      "SignatureDoesNotMatch"):
            return (f"{where} refused access ({code or e}): check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY "
                    "and the bucket's policy")
        if isinstance(e, (EndpointConnectionError, ConnectTimeoutError, ConnectionError)):
            return f"cannot reach {where} ({e}): check ${ENV_S3_ENDPOINT} or the URL's ?endpoint_url="
        return f"{where} failed: {type(e).__name__}: {e}".replace("\n", " ")

    # last: inside the class body this name shadows the builtin
    def list(self, prefix: str = "") -> list[str]:
        """The committed keys directly under ``prefix``: ``list("runs")`` -> ``["runs/a", "runs/b"]``."""
        base = self._path(prefix) if prefix else self.root
        self.fs.invalidate_cache(base)
        found = self._call(self.fs.glob, f"{base}/*/{LATEST}") or []
        start = len(self.root) + 1 if self.root else 0
        return sorted(path[start:-len(LATEST) - 1] for path in found)


class Mirror:
    """A workspace's artifacts (:data:`aigc.workspace.ARTIFACTS`: ``datasets/<name>``, ``runs/<name>``,
    ``kb/<name>``, ``assistant/<name>.json``...) as a cache of a store: uploaded when published or
    pushed, downloaded when asked for and missing, or older than the store's. The key of an artifact
    is its path under the root; a single-file artifact is stored as a version holding that one file.

    What keeps it cheap: a local copy without its manifest (``_COMMITTED.json`` inside a folder,
    ``.<file>.committed`` beside a single file) was made here (a run training now) and is never
    replaced from the store; one with it is a copy, compared with the store's LATEST once per process
    (one small read) and downloaded again only when the store holds a newer version. That check is
    good for RECHECK_S seconds, then made again: a long-running server loads a version pushed
    meanwhile the next time it loads the artifact (a run it holds loaded stays as loaded until it
    idles out, see ``aigc serve --keep-alive``). A name found in neither place is asked again after
    RECHECK_S seconds too: settings that were never made (a knowledge base without assistant
    settings) cost a server one read per RECHECK_S, not one per request."""

    RECHECK_S = 30.0
    # local path -> (its version, time.monotonic() when found current in this process): one entry per
    # artifact, however many versions a long-running server sees. Shared by every Workspace of the
    # process, since one command opens several; a different version is checked anew.
    current: dict[str, tuple[str | None, float]] = {}
    MAX_CURRENT = 10_000

    def __init__(self, store: ArtifactStore, root: Path):
        self.store, self.root = store, root

    def key_of(self, path: Path) -> str | None:
        """``kb/<name>`` for ``<root>/kb/<name>``: the path under the root when it names one artifact
        of a mirrored folder; None for anything else (a cache such as ``recommend/.cache``, a
        temporary, a mirrored folder itself)."""
        try:
            rel = path.relative_to(self.root).as_posix()
        except ValueError:
            return None
        folder, _, name = rel.rpartition("/")
        return rel if folder in ARTIFACTS and rel not in ARTIFACTS and not name.startswith(".") else None

    def ensure(self, path: Path) -> Path:
        """``path``, downloaded first when the store holds a newer committed copy than this one."""
        key = self.key_of(path)
        if key is None:
            return path
        remote = self._newer(path, key)
        if remote is not None:
            self._found_current(path, self._download(key, path, remote))
        return path

    def read(self, path: Path, rel: str) -> bytes | None:
        """The file ``rel`` inside the folder artifact at ``path`` as the newest copy has it, without
        downloading the rest: what a listing reads of each artifact (a knowledge base's ``kb.json``,
        not its vectors). The local copy's when it was made here or is current (checked as
        :meth:`ensure` checks it, so a listing repeated within RECHECK_S reads nothing from the store
        for those); else the store's, one read. None when neither has it; for a path that is not a
        mirrored artifact, the local file or None."""
        key = self.key_of(path)
        if key is None:
            return _read_bytes(path / rel)
        if _single(key):
            raise ValueError(f"Mirror.read: {key} is a single file, not a folder: read it after ensure()")
        remote = self._newer(path, key)
        if remote is not None:
            return self.store.read_file(key, rel, remote)  # the copy here (if any) stays as it is
        return _read_bytes(path / rel)

    def _newer(self, path: Path, key: str) -> dict[str, Any] | None:
        """The store's manifest of ``key`` when it is newer than the copy at ``path``, else None (the
        copy is then recorded as current). A copy made here (no manifest) or found current within
        RECHECK_S asks the store nothing."""
        local = read_manifest(_marker(path, _single(key))) if path.exists() else None
        if path.exists() and local is None:  # made here, not a copy
            return None
        version, checked = self.current.get(str(path), ("", -math.inf))
        # this copy (or, None, its absence from both places) was found current moments ago
        if version == (local or {}).get("version") and time.monotonic() - checked < self.RECHECK_S:
            return None
        remote = self.store.manifest(key)
        if remote is not None and (local or {}).get("version") != remote["version"]:
            return remote
        self._found_current(path, local)
        return None

    def _found_current(self, path: Path, local: dict[str, Any] | None) -> None:
        """Record that the copy at ``path`` (``local``: its manifest; None: absent from both places) is
        the store's current one, for RECHECK_S seconds."""
        if len(self.current) >= self.MAX_CURRENT:  # names asked for at random cannot grow it without end
            self.current.clear()
        self.current[str(path)] = ((local or {}).get("version"), time.monotonic())

    def _download(self, key: str, path: Path, remote: dict[str, Any]) -> dict[str, Any]:
        tmp = self.root / "tmp"
        if not _single(key):
            return self.store.get_folder(key, path, tmp_dir=tmp, manifest=remote)
        tmp.mkdir(parents=True, exist_ok=True)
        staged = Path(tempfile.mkdtemp(prefix=f"fetch-{path.name}-", dir=tmp))
        try:
            manifest = self.store.get_folder(key, staged / "copy", tmp_dir=staged, manifest=remote)
            if not (staged / "copy" / path.name).is_file():
                raise ArtifactStoreError(f"{self.store.url}/{key}/{manifest['version']} does not hold the "
                                         f"file {path.name}: push {key} again")
            self._install_file(staged / "copy" / path.name, path, manifest)
        finally:
            shutil.rmtree(staged, ignore_errors=True)
        return manifest

    @staticmethod
    def _install_file(src: Path, dest: Path, manifest: dict[str, Any]) -> None:
        """Rename a single file into place, then record the version it is. In that order, a crash
        between leaves either the old record (so a newer version is fetched again) or none (the file
        counts as made here): never a record that vouches for the wrong bytes."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dest)
        write_json_atomic(_marker(dest, single=True), manifest)

    def push(self, folder: Path, dest: Path | None = None) -> dict[str, Any] | None:
        """Commit ``folder`` as the store's copy of ``dest`` (default: the folder itself); the
        manifest is written into ``folder`` too, so this copy counts as current. None when ``dest``
        is not a mirrored folder (a single file goes through :meth:`push_file`)."""
        dest = dest or folder
        key = self.key_of(dest)
        if key is None or _single(key):
            return None
        manifest = self.store.put_folder(folder, key)
        write_json_atomic(folder / MANIFEST, manifest)
        self.current[str(dest)] = (manifest["version"], time.monotonic())
        return manifest

    def push_file(self, file: Path, dest: Path) -> dict[str, Any] | None:
        """Commit ``file`` as the store's copy of the single-file artifact ``dest``, then rename it
        over ``dest``: a failed upload leaves both as they were. ``file`` is named as ``dest`` and
        alone in its folder (a staging folder: what is uploaded). Returns the manifest, None (and
        only the rename) when ``dest`` is not mirrored."""
        key = self.key_of(dest)
        if key is None or not _single(key):
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(file, dest)
            return None
        if file.name != dest.name or any(p != file for p in file.parent.iterdir()):
            raise ValueError(f"push_file: {file} must be named {dest.name} and alone in its folder")
        manifest = self.store.put_folder(file.parent, key)
        self._install_file(file, dest, manifest)
        self.current[str(dest)] = (manifest["version"], time.monotonic())
        return manifest

    def delete(self, path: Path) -> bool:
        """Remove the store's copy of ``path`` (the local one is the caller's); False when it had none."""
        key = self.key_of(path)
        if key is None:
            return False
        self.current.pop(str(path), None)
        if _single(key):
            _marker(path, single=True).unlink(missing_ok=True)
        return self.store.delete(key)

    def names(self, folder: str) -> list[str]:
        """The names committed under the mirrored ``folder`` (``kb`` -> ``["faq", "shop"]``)."""
        return [key.rsplit("/", 1)[-1] for key in self.store.list(folder)]


def open_mirror(url: str, root: Path) -> Mirror | None:
    """The mirror of workspace ``root`` in the store at ``url``; None when ``url`` is the root itself."""
    store = ArtifactStore.from_url(url)
    if "file" in _protocols(store.fs):
        here, there = root.resolve(), Path(store.root).resolve()
        if here == there:
            return None
        if here.is_relative_to(there) or there.is_relative_to(here):
            raise InvalidInput(f"artifact store {url!r} overlaps the workspace {root}: put it outside, or "
                               "unset $AIGC_ARTIFACTS to keep artifacts in the workspace only")
    return Mirror(store, root)


def read_manifest(marker: Path) -> dict[str, Any] | None:
    """The manifest a local copy was downloaded or pushed as (a folder's ``_COMMITTED.json``, or the
    marker beside a single file: :func:`_marker`); None for one made here."""
    try:
        return json.loads(marker.read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def _read_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None


def _describe(folder: Path) -> dict[str, dict[str, Any]]:
    """``{relative path: {size, sha256}}`` of every file to upload, in a stable order."""
    files = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            rel = path.relative_to(folder).as_posix()
            if name.startswith(".") or rel == MANIFEST:
                continue
            size, digest = _size_and_sha256(path)
            files[rel] = {"size": size, "sha256": digest}
    return files


def _single(key: str) -> bool:
    """Whether ``key`` names a single-file artifact (``assistant/<kb>.json``), not a folder."""
    return ARTIFACTS[key.rpartition("/")[0]]


def _marker(path: Path, single: bool) -> Path:
    """Where the local copy at ``path`` records its manifest: inside a folder; beside a single file,
    hidden and not ending in its suffix (so that listings of ``*.json`` pass it by)."""
    return path.parent / f".{path.name}.committed" if single else path / MANIFEST


def _size_and_sha256(path: Path) -> tuple[int, str]:
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    return path.stat().st_size, digest


def _install(staged: Path, dest: Path, tmp_dir: Path) -> None:
    """Rename a downloaded folder into place; an older copy is renamed aside first, then removed."""
    old = None
    if dest.exists():
        old = tmp_dir / f"old-{uuid.uuid4().hex[:12]}"
        os.replace(dest, old)
    try:
        os.replace(staged, dest)
    except OSError:
        if not dest.is_dir():
            raise
        # Another process installed the same key meanwhile; its copy serves as well as ours.
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _error_code(e: BaseException) -> str | None:
    """The S3 error code (``NoSuchBucket``...) behind an exception s3fs translated, if any."""
    while e is not None:
        response = getattr(e, "response", None)
        if isinstance(response, dict) and response.get("Error", {}).get("Code"):
            return response["Error"]["Code"]
        e = e.__cause__ or e.__context__
    return None


def _protocols(fs: Any) -> tuple[str, ...]:
    return (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)


def _age(version: str) -> timedelta:
    """How old a version is, from its name (``v-<utc>-<hex>``); zero for a name of another form."""
    try:
        made = datetime.strptime(version.split("-")[1], "%Y%m%dT%H%M%S%fZ").replace(tzinfo=timezone.utc)
    except (IndexError, ValueError):
        return timedelta(0)
    return datetime.now(timezone.utc) - made


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
