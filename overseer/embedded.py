"""The embedded default (SPEC §1): bundled example jobs made into a local git
repository on first start, so ``overseer serve`` alone shows jobs at once."""
from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from pathlib import Path

from overseer.config import Config
from overseer.repo import git

log = logging.getLogger(__name__)

EXAMPLES = Path(__file__).resolve().parent / "examples"


def example_repository(dest: Path) -> Path:
    """Make ``dest`` a git repository holding the bundled examples (once)."""
    if (dest / ".git").exists():
        return dest
    tmp = dest.with_name(dest.name + ".new")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(EXAMPLES, tmp, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for sub in ("bin", "scripts"):
        for p in (tmp / sub).glob("*"):
            p.chmod(0o755)
    git.commit_all(tmp, "Example jobs bundled with Overseer", "Overseer", "overseer@localhost")
    os.rename(tmp, dest)
    log.info("made the example job repository %s", dest)
    return dest


def with_repository(config: Config) -> Config:
    """``config`` with the example repository filled in when no repository.url is set."""
    if config.repository.url is not None:
        return config
    repo = example_repository(config.data_path / "example-jobs")
    return dataclasses.replace(config, repository=dataclasses.replace(
        config.repository, url=str(repo), branch="main"))
