"""What the last sync served, kept across restarts: ``data_dir/repo-state.json``.

A restart loads this first (the commit, and the older definitions of jobs whose files that commit
breaks), so a remote that is unreachable at the start, or a broken commit at its head, leaves the
server serving what it served before, not nothing. The file names the repository (its URL without
credentials) and the branch: a configuration that names another one starts from nothing, as on a
fresh data dir. A missing or damaged file only means that.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

log = logging.getLogger(__name__)

STATE_FILE = "repo-state.json"
FORMAT = 1


@dataclass(frozen=True)
class RepoState:
    url: str            # without credentials (overseer/repo/git.py redact_url)
    branch: str
    commit: str
    synced_at: Optional[str] = None
    kept: dict = field(default_factory=dict)  # job name -> (file, commit of the definition kept)

    def to_json(self) -> dict:
        return {"format": FORMAT, "url": self.url, "branch": self.branch, "commit": self.commit,
                "synced_at": self.synced_at,
                "kept": {name: {"file": file, "commit": commit}
                         for name, (file, commit) in sorted(self.kept.items())}}


def _sha(value: object) -> bool:
    return isinstance(value, str) and len(value) in (40, 64) and all(c in "0123456789abcdef" for c in value)


def read(path: Path) -> Optional[RepoState]:
    """The state written last, or None (missing, unreadable, or not of this format)."""
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        log.warning("%s is unreadable (%s); the start does not resume from it", path, e)
        return None
    try:
        if raw["format"] != FORMAT or not _sha(raw["commit"]):
            raise ValueError("not a state of this version")
        kept = {}
        for name, entry in raw["kept"].items():
            if isinstance(name, str) and isinstance(entry["file"], str) and _sha(entry["commit"]):
                kept[name] = (entry["file"], entry["commit"])
        synced_at = raw.get("synced_at")
        return RepoState(url=str(raw["url"]), branch=str(raw["branch"]), commit=raw["commit"],
                         synced_at=synced_at if isinstance(synced_at, str) else None, kept=kept)
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        log.warning("%s is not a repository state Overseer wrote (%s); the start does not resume "
                    "from it", path, e)
        return None


def write(path: Path, state: RepoState, durable: bool = True) -> None:
    """Replace the file atomically (written, fsynced when ``durable``, renamed); a failure is
    logged, not raised: it costs only the resume of the next start."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w") as f:
            json.dump(state.to_json(), f)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        log.warning("cannot write %s: %s", path, e)
        try:
            tmp.unlink()
        except OSError:
            pass
