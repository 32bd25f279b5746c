"""The UI's static files: read once at start from the package, served from memory under
``/ui/static/NAME`` with a content hash in their URL, so a browser keeps them until they change.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Optional

STATIC = Path(__file__).resolve().parent / "static"
TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
         ".svg": "image/svg+xml", ".txt": "text/plain; charset=utf-8", ".ico": "image/x-icon",
         ".png": "image/png"}


class StaticFiles:
    def __init__(self, root: Path = STATIC):
        self.files: dict[str, tuple[bytes, str, str]] = {}  # name -> (bytes, type, hash)
        for path in sorted(root.rglob("*")):
            kind = TYPES.get(path.suffix)
            if path.is_file() and kind:
                data = path.read_bytes()
                name = path.relative_to(root).as_posix()
                self.files[name] = (data, kind, hashlib.sha256(data).hexdigest()[:12])

    def url(self, name: str) -> str:
        """The URL of a static file, with its content hash (KeyError for a file that is not there)."""
        return f"/ui/static/{name}?v={self.files[name][2]}"

    def get(self, name: str) -> Optional[tuple[bytes, str, str]]:
        return self.files.get(name)
