"""Model versions on disk, with an atomically switched "current" version.

    ROOT/versions/<version>/   a model directory (model.modeldir) plus version.json and
                               checksums.json (sha256 of the model files, written by ``seal``)
    ROOT/current               symlink -> versions/<version>, replaced atomically (rename)
    ROOT/history.json          the versions promoted, oldest first

A version directory appears only when complete (it is staged), and ``current`` moves only by
``promote``: a failed or killed training leaves what is served untouched. Readers resolve
``current`` once per load, so they never see a half-switched state.

Before a version is served, ``serving`` checks it against its checksums; a version that fails (or a
``current`` pointing at nothing) is reported, and the last good promoted version is served instead.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from model.io import DataError, sync_folder, write_atomic
from model.modeldir import BOX_CLASSIFIER_META, BOX_CLASSIFIER_WEIGHTS, CONFIG, META, WEIGHTS

log = logging.getLogger(__name__)

VERSION_META = "version.json"
CHECKSUMS = "checksums.json"
HISTORY = "history.json"
SEALED_FILES = (WEIGHTS, CONFIG, META)
OPTIONAL_SEALED_FILES = (BOX_CLASSIFIER_WEIGHTS, BOX_CLASSIFIER_META)  # sealed where present
_SAFE = re.compile(r"^[A-Za-z0-9._-]+$")
_verified: dict[tuple, str | None] = {}  # (file stats) -> problem; a version is hashed once per process
_ANY = object()  # ``promote``'s default: whatever is served now


class ReplacedMeanwhile(DataError):
    """``promote(replacing=...)`` found another version served than the caller expected."""

    def __init__(self, expected: str | None, now: str | None) -> None:
        super().__init__(f"the served version changed from {expected or 'none'} to {now or 'none'}")
        self.expected, self.now = expected, now


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class Serving:
    """What a registry serves: ``version`` (None: nothing), and why not the current one if not."""
    version: str | None
    path: Path | None
    problem: str | None = None      # what is wrong with ``current``, when something is
    fallback_from: str | None = None  # the current version that could not be served


class Registry:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.versions_dir = self.root / "versions"

    def new_version_name(self) -> str:
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        name, number = f"v{stamp}", 1
        while (self.versions_dir / name).exists():
            number += 1
            name = f"v{stamp}-{number}"
        return name

    def path(self, version: str) -> Path:
        if not _SAFE.match(version):
            raise DataError(f"invalid model version name {version!r}")
        return self.versions_dir / version

    def current(self) -> str | None:
        """The version ``current`` names (it may dangle: ``problem`` and ``serving`` say so)."""
        link = self.root / "current"
        if not link.is_symlink():
            return None
        return Path(os.readlink(link)).name

    def seal(self, version: str) -> None:
        """Record the checksums of a finished version's model files."""
        folder = self.path(version)
        names = [*SEALED_FILES, *(n for n in OPTIONAL_SEALED_FILES if (folder / n).is_file())]
        sums = {name: _sha256(folder / name) for name in names}
        write_atomic(folder / CHECKSUMS, json.dumps(sums, indent=1))

    def problem(self, version: str) -> str | None:
        """Why ``version`` cannot be served, or None when it is complete and matches its checksums."""
        folder = self.path(version)
        if not folder.is_dir():
            return f"version {version} does not exist"
        missing = [name for name in SEALED_FILES if not (folder / name).is_file()]
        if missing:
            return f"version {version} is incomplete (missing {', '.join(missing)})"
        try:
            sums = json.loads((folder / CHECKSUMS).read_text())
        except FileNotFoundError:  # sealed before checksums existed: complete is all we can check
            return None
        except ValueError:
            sums = None
        if not isinstance(sums, dict):
            return f"version {version}: {CHECKSUMS} is unreadable"
        names = [*SEALED_FILES, *(n for n in OPTIONAL_SEALED_FILES if n in sums)]
        missing = [name for name in names if not (folder / name).is_file()]
        if missing:
            return f"version {version} is incomplete (missing {', '.join(missing)})"
        stats = tuple((name, s.st_ino, s.st_size, s.st_mtime_ns) for name in (*names, CHECKSUMS)
                      for s in [(folder / name).stat()])
        key = (str(folder.resolve()), stats)
        if key not in _verified:
            bad = [name for name in names if sums.get(name) != _sha256(folder / name)]
            _verified[key] = f"version {version}: {', '.join(bad)} changed since it was sealed" if bad else None
        return _verified[key]

    def serving(self, unusable: set[str] = frozenset()) -> Serving:
        """The version to serve: ``current`` if sound, else the last good promoted one, saying why.

        ``unusable``: versions the caller found it cannot load, whatever their checksums say."""
        current = self.current()
        if current is None:
            return Serving(None, None)
        problem = f"version {current} cannot be loaded" if current in unusable else self.problem(current)
        if problem is None:
            return Serving(current, self.path(current))
        for version in reversed(self.history()):
            if version != current and version not in unusable and self.problem(version) is None:
                return Serving(version, self.path(version), problem, current)
        return Serving(None, None, problem, current)

    def history(self) -> list[str]:
        try:
            return [v for v in json.loads((self.root / HISTORY).read_text()) if isinstance(v, str)]
        except FileNotFoundError:
            return []
        except (ValueError, TypeError) as exc:  # only a hand edit or a failing disk can do this
            log.warning("%s unreadable (%s): the promotion history starts again", self.root / HISTORY, exc)
            return []

    def promote(self, version: str, *, replacing: str | None | object = _ANY) -> None:
        """Make ``version`` the served one: seal it, build a new symlink, rename it over ``current``.

        ``replacing``: promote only if that version (None: nothing) is still the served one, else
        raise ``ReplacedMeanwhile``. Promotions hold the registry's lock, so a training job's check
        and its switch cannot straddle a rollback made by hand (`birads promote`) in between."""
        if not self.path(version).is_dir():  # before the lock, which would make the folder
            raise DataError(f"model version {version} does not exist")
        with self._promotion_lock():
            if not self.path(version).is_dir():  # removed meanwhile (``prune``)
                raise DataError(f"model version {version} does not exist")
            if replacing is not _ANY and (now := self.current()) != replacing:
                raise ReplacedMeanwhile(replacing, now)
            if not (self.path(version) / CHECKSUMS).is_file():
                self.seal(version)
            elif problem := self.problem(version):  # re-sealing would record changed files as good
                raise DataError(f"{problem}: not promoted")
            tmp = self.root / f".current.{os.getpid()}"
            tmp.unlink(missing_ok=True)
            os.symlink(Path("versions") / version, tmp)
            os.replace(tmp, self.root / "current")
            sync_folder(self.root)  # the switch survives a power cut, as the history beside it does
            # only a version that was switched to is history (the fallback): a failed switch leaves none
            history = [v for v in self.history() if v != version] + [version]
            write_atomic(self.root / HISTORY, json.dumps(history))

    @contextmanager
    def _promotion_lock(self) -> Iterator[None]:
        """An exclusive lock across processes (the worker's jobs, `birads promote`), freed by the
        kernel when its holder dies, however it dies. Read-only: whoever made the file, any user
        who may write the folder can take it."""
        handle = os.open(self.root / ".promotion.lock", os.O_RDONLY | os.O_CREAT, 0o666)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield
        finally:
            os.close(handle)

    def describe(self, version: str, **facts: object) -> None:
        """Write the version's metadata (parent, data size, metrics, created at, ...)."""
        meta = {"version": version, "created_at": datetime.now(UTC).isoformat(timespec="seconds")}
        meta.update(facts)
        write_atomic(self.path(version) / VERSION_META, json.dumps(meta, indent=1, default=str))

    def info(self, version: str) -> dict:
        """The version's description; one its job never wrote (killed between training and
        describing it) says so as the reason it is not served."""
        try:
            return json.loads((self.path(version) / VERSION_META).read_text())
        except FileNotFoundError:
            return {"version": version, "refused": "incomplete: its training job stopped before describing it"}

    def prune(self, keep: int) -> list[str]:
        """Remove all but the newest ``keep`` versions (0: keep every one), never the one served
        nor the one serving would fall back to: each is a whole model (R101-FPN: about 240 MB).
        A version leaves the listing at once (renamed hidden) before its files go; what a crash
        leaves behind, ``model.train.remove_abandoned_work`` clears."""
        if keep <= 0:
            return []
        with self._promotion_lock():  # not while someone serves an old version by hand
            current = self.current()
            # what serves now, and what would if the served one broke (or failed to load)
            spared = {current, self.serving().version, self.serving(unusable={current}).version}
            removed = [v for v in self.versions()[:-keep] if v not in spared]
            for version in removed:
                hidden = self.versions_dir / f".{version}.removed.{os.getpid()}"
                os.replace(self.path(version), hidden)
                shutil.rmtree(hidden, ignore_errors=True)
        return removed

    def versions(self) -> list[str]:
        if not self.versions_dir.is_dir():
            return []
        return sorted(p.name for p in self.versions_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
