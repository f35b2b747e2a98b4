"""Model versions on disk, with an atomically switched "current" version.

    ROOT/versions/<version>/   a model directory (model.modeldir) plus version.json
    ROOT/current               symlink -> versions/<version>, replaced atomically (rename)

A version directory appears only when complete (it is staged), and ``current`` moves only by
``promote``: a failed or killed training leaves what is served untouched. Readers resolve
``current`` once per load, so they never see a half-switched state.
"""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path

from model.io import DataError, write_atomic

VERSION_META = "version.json"
_SAFE = re.compile(r"^[A-Za-z0-9._-]+$")


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
        link = self.root / "current"
        if not link.is_symlink():
            return None
        target = Path(os.readlink(link)).name
        return target if (self.versions_dir / target).is_dir() else None

    def current_path(self) -> Path | None:
        version = self.current()
        return None if version is None else self.path(version)

    def promote(self, version: str) -> None:
        """Make ``version`` the served one: build a new symlink, then rename it over ``current``."""
        if not self.path(version).is_dir():
            raise DataError(f"model version {version} does not exist")
        tmp = self.root / f".current.{os.getpid()}"
        tmp.unlink(missing_ok=True)
        os.symlink(Path("versions") / version, tmp)
        os.replace(tmp, self.root / "current")

    def describe(self, version: str, **facts: object) -> None:
        """Write the version's metadata (parent, data size, metrics, created at, ...)."""
        meta = {"version": version, "created_at": datetime.now(UTC).isoformat(timespec="seconds")}
        meta.update(facts)
        write_atomic(self.path(version) / VERSION_META, json.dumps(meta, indent=1, default=str))

    def info(self, version: str) -> dict:
        try:
            return json.loads((self.path(version) / VERSION_META).read_text())
        except FileNotFoundError:
            return {"version": version}

    def versions(self) -> list[str]:
        if not self.versions_dir.is_dir():
            return []
        return sorted(p.name for p in self.versions_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
