"""The web UI (SPEC §12): server-rendered pages under ``/ui/``, served by the API's own server."""
from __future__ import annotations

from .site import WebUi

__all__ = ["WebUi"]
