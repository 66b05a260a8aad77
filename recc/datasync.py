"""`sync`: copy what is new or changed from one datastore to another (``recc sync``).

Change detection is size, then the SHA-256 of the content, computed the same way on both
sides. Never an S3 ETag: once an upload is multipart the ETag is the MD5 of the parts' MD5s
plus ``-N`` (and under SSE-KMS not an MD5 at all), so it matches neither a local MD5 nor an
upload of the same bytes with another part size. S3 objects RECC writes (``write_df``, ``sync``)
carry their SHA-256 in user metadata (``x-amz-meta-recc-sha256``, given when the upload starts,
so it holds for multipart uploads too): comparing costs one HEAD. An object without it (written
by another tool) is hashed by reading it; local files are hashed by reading them.

Sync never deletes: a file only in the destination stays. Safe to rerun: a file is written to a
temporary name and renamed (filesystems) or uploaded in one PUT / one multipart upload (S3).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import uuid
from dataclasses import asdict, dataclass, field

from recc.datastore import (SHA256_KEY, Datastore, DatastoreError, access_error, clean_path, get_datastore)
from recc.errors import RECCError

TMP_MARK = ".recc-tmp"  # temporary files of write_df and sync end with this; never synced
CHUNK = 8 * 2**20


@dataclass
class SyncReport:
    src: str
    dst: str
    path: str
    dry_run: bool
    copied: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    bytes_copied: int = 0

    def summary(self) -> str:
        verb = "would copy" if self.dry_run else "copied"
        return (f"{self.src} -> {self.dst}: {verb} {len(self.copied)} file(s) ({_size(self.bytes_copied)}), "
                f"skipped {len(self.skipped)} unchanged")


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def temp_name(full: str) -> str:
    """A hidden temporary name next to ``full`` (same folder, so the rename is atomic)."""
    head, tail = os.path.split(full)
    return os.path.join(head, f".{tail}.{uuid.uuid4().hex[:12]}{TMP_MARK}")


def _is_s3(store: Datastore) -> bool:
    return store.protocol in ("s3", "s3a")


def sha256_of(store: Datastore, full: str) -> str:
    """The hex SHA-256 of a file's content, by reading it."""
    digest = hashlib.sha256()
    opener = open(full, "rb") if store.is_local else store.fs.open(full, "rb", block_size=CHUNK)
    with opener as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def content_sha256(store: Datastore, full: str) -> str:
    """The SHA-256 of a file: from RECC's S3 metadata when present, else by reading it."""
    known = stat(store, full) if _is_s3(store) else None
    return (known and known[1]) or sha256_of(store, full)


def stat(store: Datastore, full: str) -> tuple[int, str | None] | None:
    """(size, SHA-256 if known without reading) of a file, or None if it is not there."""
    if _is_s3(store):
        bucket, key, _ = store.fs.split_path(full)
        try:
            head = store.fs.call_s3("head_object", Bucket=bucket, Key=key)
        except FileNotFoundError as exc:
            if "bucket" in str(exc).lower():
                raise
            return None
        meta = head.get("Metadata") or {}
        return int(head["ContentLength"]), meta.get(SHA256_KEY) or meta.get(SHA256_KEY.replace("-", "_"))
    try:
        info = store.info(full)
    except FileNotFoundError:
        return None
    if info.get("type") == "directory":
        raise DatastoreError(f"{full} in {store.name} is a folder, the source has a file there")
    return int(info["size"]), None


def _files(store: Datastore, rel: str) -> dict[str, int]:
    """Relative path -> size of every file at or under ``rel`` (temporary files left out)."""
    full = store.full(rel)
    try:
        info = store.info(full)
    except FileNotFoundError:
        raise FileNotFoundError(f"{rel or '/'} not found in {store.name} ({store.url(rel)})") from None
    if info.get("type") != "directory":
        return {rel: int(info["size"])}
    out: dict[str, int] = {}
    if store.is_local:
        for folder, _dirs, names in os.walk(full):
            for name in names:
                path = os.path.join(folder, name)
                out[os.path.relpath(path, store.base).replace(os.sep, "/")] = os.path.getsize(path)
    else:
        prefix = store.base + "/"
        for name, detail in store.fs.find(full, detail=True).items():
            if detail.get("type") == "file" and name.startswith(prefix):
                out[name[len(prefix):]] = int(detail["size"])
    return {k: v for k, v in sorted(out.items()) if not k.endswith(TMP_MARK)}


def put_local_file(local: str, dst: Datastore, full: str, sha: str | None = None) -> None:
    """Upload a local file: one PUT or one multipart upload (atomic), with its SHA-256 on S3."""
    if _is_s3(dst):
        sha = sha or sha256_of(Datastore("scratch", os.path.dirname(local)), local)
        dst.fs.put_file(local, full, chunksize=dst.fs.default_block_size, Metadata={SHA256_KEY: sha})
    else:
        dst.fs.put_file(local, full)


def _copy(src: Datastore, dst: Datastore, rel: str, sha: str | None) -> None:
    sfull, dfull = src.full(rel), dst.full(rel)
    if dst.is_local:
        tmp = temp_name(dfull)
        try:
            os.makedirs(os.path.dirname(dfull), exist_ok=True)
            if src.is_local:
                shutil.copyfile(sfull, tmp)
            else:
                src.fs.get_file(sfull, tmp)
            os.replace(tmp, dfull)
        except BaseException as exc:
            if os.path.exists(tmp):
                os.unlink(tmp)
            if isinstance(exc, Exception):
                raise access_error(dst, "write", rel, exc) from exc
            raise
        return
    if src.is_local:
        local, scratch = sfull, None
    else:
        scratch = tempfile.NamedTemporaryFile(prefix="recc-sync-", delete=False)
        scratch.close()
        local = scratch.name
        try:
            src.fs.get_file(sfull, local)
        except Exception as exc:
            os.unlink(local)
            raise access_error(src, "read", rel, exc) from exc
    try:
        put_local_file(local, dst, dfull, sha)
    except Exception as exc:
        raise access_error(dst, "write", rel, exc) from exc
    finally:
        if scratch is not None:
            os.unlink(local)


def sync(path: str = "", src: str = "LOCAL", dst: str = "S3", dry_run: bool = False,
         quiet: bool = False) -> SyncReport:
    """Copy the files at or under ``path`` that are missing or different in ``dst``; report what it did."""
    source, target = get_datastore(src), get_datastore(dst)
    if source.url() == target.url():
        raise DatastoreError(f"sync from {source.name} to itself does nothing", hint="pick two datastores")
    rel = clean_path(path, allow_empty=True)
    report = SyncReport(source.name, target.name, rel, dry_run)
    try:
        files = _files(source, rel)
    except (FileNotFoundError, RECCError):
        raise
    except Exception as exc:  # noqa: BLE001 - rights, credentials: name the store
        raise access_error(source, "list", rel, exc) from exc
    for name, size in files.items():
        try:
            there = stat(target, target.full(name))
        except RECCError:
            raise
        except Exception as exc:
            raise access_error(target, "read", name, exc) from exc
        sha = None
        if there is not None and there[0] == size:
            sha = content_sha256(source, source.full(name))
            if (there[1] or sha256_of(target, target.full(name))) == sha:
                report.skipped.append(name)
                if not quiet:
                    print(f"skip  {name}  (unchanged)")
                continue
        if not quiet:
            print(f"{'would copy' if dry_run else 'copy'}  {name}  ({_size(size)})", flush=True)
        if not dry_run:
            _copy(source, target, name, sha)
        report.copied.append(name)
        report.bytes_copied += size
    if not quiet:
        print(report.summary())
    return report


# --- the command ------------------------------------------------------------------------------

def add_sync_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", nargs="?", default="", help="a file or folder inside the datastores (default: all)")
    p.add_argument("--from", dest="src", default="LOCAL", help="source datastore (default LOCAL)")
    p.add_argument("--to", dest="dst", default="S3", help="destination datastore (default S3)")
    p.add_argument("--dry-run", action="store_true", help="only say what would be copied")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def cmd_sync(args: argparse.Namespace) -> int:
    """``recc sync``: errors a person can act on become `DatastoreError` (one line and a hint)."""
    try:
        report = sync(args.path, src=args.src, dst=args.dst, dry_run=args.dry_run, quiet=args.json)
    except (FileNotFoundError, ValueError) as exc:
        raise DatastoreError(str(exc), hint="paths are relative to the datastore roots; see `recc sync --help`") \
            from None
    if args.json:
        print(json.dumps(asdict(report), indent=2))
    return 0


def sync_main(argv: list[str] | None = None) -> int:
    """``recc sync PATH --from LOCAL --to S3 [--dry-run] [--json]`` on its own (exit status)."""
    parser = argparse.ArgumentParser(prog="recc sync", description="copy new or changed files between datastores")
    add_sync_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return cmd_sync(args)
    except RECCError as exc:
        print(f"recc: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"  hint: {exc.hint}", file=sys.stderr)
        return 1
