"""The run form: one field per var, by the var's type (SPEC §12), and the form's values back
into the strings the server converts (the same conversion as form data posted to the API).

Fields are named ``var:NAME`` (no var name holds a colon, so they never meet the form's own
fields). An empty field is not sent: the var's default applies, or the server answers that a
required var is missing. A secret var's default is never put into the page.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timezone
from typing import Any, Optional

from overseer.model.vars import MISSING, VarSpec, parse_iso8601, text_of

PREFIX = "var:"
LIST_TYPES = ("seq", "set")
JSON_TYPES = ("map", "omap", "pairs")


@dataclass(frozen=True)
class Field:
    """What the template needs to draw one var's field."""

    name: str
    type: str
    widget: str  # text, number, checkbox, select, password, textarea, datetime, fixed
    value: str  # the value shown (default, or what was posted)
    checked: bool = False
    options: tuple[tuple[str, str], ...] = ()  # (value, label) of a select
    step: str = ""
    required: bool = False
    description: str = ""
    hint: str = ""
    has_default: bool = False

    @property
    def input_name(self) -> str:
        return PREFIX + self.name

    @property
    def input_id(self) -> str:
        return "var-" + self.name


def _secret(spec: VarSpec) -> bool:
    return bool(getattr(spec, "secret", False))


def _default_text(spec: VarSpec) -> str:
    default = spec.default
    if default is MISSING or default is None:
        return ""
    if spec.type in LIST_TYPES and isinstance(default, (list, tuple, set, frozenset)):
        items = list(default)
        if all(isinstance(i, str) and "\n" not in i and i and not i.startswith("[") for i in items):
            return "\n".join(items)
        return json.dumps(items, ensure_ascii=False)
    if spec.type in JSON_TYPES or isinstance(default, (dict, list)):
        return json.dumps(default, indent=2, ensure_ascii=False, default=str)
    if spec.type == "timestamp":
        text = default.isoformat() if hasattr(default, "isoformat") else text_of(default)
        try:
            moment = parse_iso8601(text)
        except ValueError:
            return text
        if moment.tzinfo is not None:
            moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
        return moment.replace(microsecond=0).isoformat()
    return text_of(default)


def fields(specs: tuple[VarSpec, ...], posted: Optional[dict] = None) -> list[Field]:
    """The run form's fields; ``posted`` (the values of a refused run) are shown again."""
    out = []
    for spec in specs:
        has_default = spec.default is not MISSING
        shown = _default_text(spec) if not _secret(spec) else ""
        if posted is not None and PREFIX + spec.name in posted and not _secret(spec):
            raw = posted[PREFIX + spec.name]
            shown = raw[-1] if isinstance(raw, list) else raw
        common = dict(name=spec.name, type=spec.type, required=spec.required and not has_default,
                      description=spec.description or "", has_default=has_default)
        kind = spec.type
        if _secret(spec):
            hint = "secret: the default is kept when left empty" if has_default else "secret"
            out.append(Field(widget="password", value="", hint=hint, **common))
        elif kind == "bool":
            if posted is not None:
                checked = _posted_bool(posted.get(PREFIX + spec.name))
            else:
                checked = spec.default is True
            out.append(Field(widget="checkbox", value="true", checked=checked, **common))
        elif kind in ("int", "float"):
            out.append(Field(widget="number", value=shown, step="1" if kind == "int" else "any", **common))
        elif kind == "enum":
            options = tuple((text_of(v), text_of(v)) for v in (spec.values or ()))
            if not has_default or not spec.required:
                options = (("", "—"), *options)
            out.append(Field(widget="select", value=shown, options=options, **common))
        elif kind in LIST_TYPES:
            hint = "one item per line, or a JSON list"
            out.append(Field(widget="textarea", value=shown, hint=hint, **common))
        elif kind in JSON_TYPES:
            hint = "a JSON object" if kind != "pairs" else "a JSON list of [key, value] pairs"
            out.append(Field(widget="textarea", value=shown, hint=hint, **common))
        elif kind == "timestamp":
            out.append(Field(widget="datetime", value=shown, step="1", hint="UTC", **common))
        elif kind == "null":
            out.append(Field(widget="fixed", value="null", hint="always null", **common))
        elif kind == "binary":
            out.append(Field(widget="textarea", value=shown, hint="base64", **common))
        elif "\n" in shown:
            out.append(Field(widget="textarea", value=shown, **common))
        else:
            out.append(Field(widget="text", value=shown, **common))
    return out


def _posted_bool(raw: Any) -> bool:
    value = raw[-1] if isinstance(raw, list) else raw
    return isinstance(value, str) and value.strip().lower() == "true"


def values(specs: tuple[VarSpec, ...], form: dict) -> dict[str, Any]:
    """The var values of a posted run form, as strings (and lists of strings) for the server to
    convert by type, exactly as for form data posted to ``POST /jobs/JOB``."""
    by_name = {spec.name: spec for spec in specs}
    out: dict[str, Any] = {}
    for key, raw in form.items():
        if not key.startswith(PREFIX):
            continue
        name = key[len(PREFIX):]
        spec = by_name.get(name)
        if spec is None:
            out[name] = raw  # the server names it: unknown var
            continue
        if spec.type == "bool":  # a hidden "false" comes before the checkbox's "true"
            out[name] = raw[-1] if isinstance(raw, list) else raw
            continue
        if isinstance(raw, list):
            out[name] = raw
            continue
        if spec.type == "null":
            out[name] = "null"
            continue
        if raw.strip() == "" and not (spec.type == "str" and raw):
            continue
        if spec.type in LIST_TYPES and not raw.lstrip().startswith("["):
            out[name] = [line for line in raw.replace("\r\n", "\n").split("\n") if line != ""]
        elif spec.type == "timestamp":
            text = raw.strip()
            out[name] = text if text.endswith(("Z", "z")) or "+" in text[10:] else text + "Z"
        else:
            out[name] = raw
    return out
