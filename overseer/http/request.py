"""Requests and responses of the API: path, query, headers and bodies, read within limits.

Bodies: a JSON object (values keep their JSON types) or form data
(urlencoded or multipart: strings, converted by var type later; a repeated
field is a list). An empty body is no values. A body that looks like JSON (it
begins with ``{`` or ``[``) sent as form data or without a Content-Type is 400
with a hint; anything else is 415, a body over the limit 413, a body that
cannot be read 400.
"""
from __future__ import annotations

import email.parser
import email.policy
import functools
import ipaddress
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any, Optional
from urllib.parse import parse_qs, urlsplit

from . import errors
from .errors import HttpError

INT_RE = re.compile(r"[0-9]{1,19}\Z")
MAX_INT = (1 << 63) - 1
TRUE, FALSE = {"", "true", "1", "yes", "on"}, {"false", "0", "no", "off"}


def is_loopback_name(name: str) -> bool:
    """``localhost`` or a loopback IP address (127.0.0.0/8, ::1), without port or brackets."""
    name = name.strip().lower().rstrip(".")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@functools.lru_cache(maxsize=1024)
def host_is_loopback(host: str) -> bool:
    """Whether a Host header (``name``, ``name:port``, ``[v6]`` or ``[v6]:port``) names loopback."""
    host = host.strip()
    if host.startswith("["):
        name, sep, rest = host[1:].partition("]")
        if not sep or (rest and not re.fullmatch(r":[0-9]{1,5}", rest)):
            return False
    elif host.count(":") == 1:
        name, _, port = host.partition(":")
        if not re.fullmatch(r"[0-9]{1,5}", port):
            return False
    else:
        name = host
    return is_loopback_name(name)


_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_of(url: str) -> Optional[str]:
    """The origin of an http(s) URL as ``scheme://host:port`` (lower case, the port always
    written), or None when it has none (``null``, another scheme, not a URL)."""
    try:
        parts = urlsplit(url.strip())
        scheme, host, port = parts.scheme.lower(), parts.hostname, parts.port
    except ValueError:
        return None
    if scheme not in _DEFAULT_PORTS or not host:
        return None
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}:{port or _DEFAULT_PORTS[scheme]}"


def json_default(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


class Request:
    """What the handlers need of one WSGI request."""

    def __init__(self, environ: dict):
        self.environ = environ
        self.method = environ.get("REQUEST_METHOD", "GET").upper()
        self.path = environ.get("PATH_INFO", "") or "/"
        self._query: Optional[dict[str, list[str]]] = None

    def segments(self) -> Optional[list[str]]:
        """The decoded path segments, or None when the path is not UTF-8 or has empty segments."""
        try:
            path = self.path.encode("latin-1").decode("utf-8")
        except UnicodeError:
            return None
        if not path.startswith("/"):
            return None
        parts = path[1:].split("/")
        if len(parts) > 1 and parts[-1] == "":
            parts.pop()  # one trailing slash is ignored
        return None if any(p == "" for p in parts) else parts

    def header(self, name: str) -> Optional[str]:
        return self.environ.get("HTTP_" + name.upper().replace("-", "_"))

    def param(self, name: str) -> Optional[str]:
        if self._query is None:
            raw = self.environ.get("QUERY_STRING", "")
            try:
                raw = raw.encode("latin-1").decode("utf-8")
                self._query = parse_qs(raw, keep_blank_values=True, errors="strict", max_num_fields=100)
            except ValueError as e:
                raise errors.bad_request(f"the query string cannot be read: {e}") from None
        values = self._query.get(name)
        return values[-1] if values else None

    def int_param(self, name: str, default: Optional[int], low: int, high: int = MAX_INT) -> Optional[int]:
        raw = self.param(name)
        if raw is None:
            return default
        if not INT_RE.match(raw) or not low <= int(raw) <= high:
            raise errors.bad_request(f"{name} must be an integer from {low} to {high}, not {raw!r}")
        return int(raw)

    def bool_param(self, name: str) -> bool:
        raw = self.param(name)
        if raw is None:
            return False
        if raw.lower() in TRUE:
            return True
        if raw.lower() in FALSE:
            return False
        raise errors.bad_request(f"{name} must be true or false, not {raw!r}")


class Response:
    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int, headers: list[tuple[str, str]], body: Any):
        self.status, self.headers, self.body = status, headers, body


def json_response(status: int, data: Any, headers: Iterable[tuple[str, str]] = ()) -> Response:
    body = json.dumps(data, default=json_default).encode("utf-8") + b"\n"
    return Response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                             *headers], body)


def error_response(err: HttpError) -> Response:
    body = errors.error_body(err.message) + b"\n"
    return Response(err.status, [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                                 *err.headers], body)


def read_body(req: Request, max_body: int) -> bytes:
    """The whole body (at most ``max_body_bytes``, else 413); an empty one is b""."""
    env, stream = req.environ, req.environ["wsgi.input"]
    length = (env.get("CONTENT_LENGTH") or "").strip()
    if length:
        if not INT_RE.match(length):
            raise errors.bad_request(f"bad Content-Length {length!r}")
        size = int(length)
        if size > max_body:
            _drain(stream, size)  # read it, so that the client is sure to get the 413
            raise errors.too_large(max_body)
        data = _read(stream, size)
        if len(data) < size:
            raise errors.bad_request("the request body ended early")
        return data
    if "chunked" in (env.get("HTTP_TRANSFER_ENCODING") or "").lower():
        data = _read(stream, max_body + 1)
        if len(data) > max_body:
            _drain(stream, None)
            raise errors.too_large(max_body)
        return data
    return b""


def body_values(req: Request, max_body: int) -> tuple[dict, bool]:
    """Var values from the body, and whether they are strings to convert (form data)."""
    body = read_body(req, max_body)
    if not body:
        return {}, False
    raw_type = req.environ.get("CONTENT_TYPE") or ""
    media = raw_type.split(";", 1)[0].strip().lower()
    if media in ("", "application/x-www-form-urlencoded") and body.lstrip()[:1] in (b"{", b"["):
        # curl -d sends JSON as form data; no var name begins with a bracket
        sent = f"Content-Type {raw_type!r}" if raw_type else "no Content-Type"
        raise errors.bad_request(f"the body looks like JSON but came with {sent}: "
                                 f"send it with Content-Type: application/json")
    if media == "application/json" or (media.startswith("application/") and media.endswith("+json")):
        try:
            data = json.loads(body, parse_constant=_no_constant)
        except RecursionError:
            raise errors.bad_request("the JSON body is nested too deeply") from None
        except ValueError as e:
            raise errors.bad_request(f"the body is not valid JSON: {e}") from None
        if not isinstance(data, dict):
            raise errors.bad_request(f"the body must be a JSON object, not {type(data).__name__}")
        return data, False
    if media == "application/x-www-form-urlencoded":
        try:
            fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, errors="strict",
                              max_num_fields=10000)
        except ValueError as e:
            raise errors.bad_request(f"the form data cannot be read: {e}") from None
        return _single(fields), True
    if media == "multipart/form-data":
        return _single(_multipart(raw_type, body)), True
    raise errors.unsupported_media(raw_type)


def _read(stream: Any, size: int) -> bytes:
    parts, left = [], size
    while left > 0:
        data = stream.read(min(left, 1 << 16))
        if not data:
            break
        parts.append(data)
        left -= len(data)
    return b"".join(parts)


def _drain(stream: Any, size: Optional[int]) -> None:
    """Read and drop a refused body (bounded by the HTTP server's own hard limit)."""
    try:
        while size is None or size > 0:
            data = stream.read(1 << 16 if size is None else min(size, 1 << 16))
            if not data:
                return
            if size is not None:
                size -= len(data)
    except Exception:  # the server's hard limit, or the client went away
        return


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _single(fields: dict[str, list[str]]) -> dict[str, Any]:
    """Form fields: one value as a string, a repeated field as a list of strings."""
    return {k: v[0] if len(v) == 1 else v for k, v in fields.items()}


def _multipart(content_type: str, body: bytes) -> dict[str, list[str]]:
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1", "replace")
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not msg.is_multipart() or msg.defects:
        raise errors.bad_request("the multipart/form-data body cannot be read")
    fields: dict[str, list[str]] = {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name:
            raise errors.bad_request("a multipart/form-data part has no name")
        try:
            value = (part.get_payload(decode=True) or b"").decode("utf-8")
        except UnicodeDecodeError:
            raise errors.bad_request(f"form field {name!r} is not UTF-8 text") from None
        fields.setdefault(str(name), []).append(value)
    return fields
