"""The sandboxed Jinja2 environment that job commands are templates of, and the last step each
``{{ ... }}`` output takes in it.

That step (``_finalize``) runs after every filter: the output's value is kept, as data, in the
outputs of the render in progress (:data:`OUTPUTS`) and a slot stands in the text; the renderer
(overseer/model/render.py) writes each value for its place once the whole text is there. An
attribute or item the sandbox hides is an error where the template touches it. A command's text
is bounded by :data:`MAX_COMMAND_BYTES` as it grows.
"""
from __future__ import annotations

import contextvars
import re
from functools import lru_cache
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from overseer.exceptions import ParamError
from overseer.model.vars import text_of

# A command runs as ``/bin/sh -c COMMAND``: one argument of exec(2), which Linux refuses at 128 KiB
# or more (MAX_ARG_STRLEN). The server may put a few hundred bytes in front (the move into the
# run's cgroup): 4 KiB are kept for that, so a command this long or shorter always starts.
MAX_COMMAND_BYTES = 128 * 1024 - 4096


class Outputs(list):
    """The outputs of one render, and how much text they make so far."""

    __slots__ = ("size",)

    def __init__(self) -> None:
        super().__init__()
        self.size = 0


# The outputs of the render in progress: each ``{{ }}`` writes a slot ``\0<index>\0`` (no value
# and no template text holds a NUL) and its value goes here, to be written once its place is known.
OUTPUTS: contextvars.ContextVar[Outputs | None] = contextvars.ContextVar("overseer_render_outputs",
                                                                         default=None)
SLOT = re.compile("\0([0-9]+)\0")


def plain(value: Any) -> Any:
    """``value`` with every str subclass (Jinja2's Markup above all) made a plain str."""
    if isinstance(value, str):
        return value if type(value) is str else str.__str__(value)
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in value.items()}
    return value


def flat_text(value: Any) -> str:
    """``value`` as one piece of text inside quotes: a list's items joined by spaces."""
    if isinstance(value, jinja2.Undefined):
        return ""
    if isinstance(value, (list, tuple)):
        return " ".join(text_of(item) for item in value)
    if value is None or isinstance(value, (str, bool, int, float, dict)):
        return text_of(value)
    return str(value)


@jinja2.pass_context
def _finalize(context: Any, value: Any) -> str:
    outputs = OUTPUTS.get()
    if outputs is None:
        raise RuntimeError("commands render only through render_command")
    value = plain(value)
    if isinstance(value, str) and "\0" in value:  # text built from outputs ({% set %} blocks, macros)
        value = SLOT.sub(lambda m: flat_text(outputs[int(m.group(1))]), value)
        if "\0" in value:
            raise ParamError("the template produced a NUL character, which no command can hold")
    outputs.size += len(value) if isinstance(value, str) else len(flat_text(value))
    if outputs.size > MAX_COMMAND_BYTES:
        raise ParamError(too_long(None))
    outputs.append(value)
    return f"\0{len(outputs) - 1}\0"


def too_long(size: int | None) -> str:
    what = f"is {size} bytes" if size is not None else "grew"
    return (f"the rendered command {what}, over the limit of {MAX_COMMAND_BYTES} bytes (a command is one "
            "argument of exec, which Linux bounds at 128 KiB): pass large data in a file or a var the "
            "command reads from $OVERSEER_VAR_NAME")


class _Sandbox(ImmutableSandboxedEnvironment):
    """The sandbox, with an attribute or item it hides (``__class__``, ``mro``, ``append`` on a
    list, ...) an error where it is touched, not Jinja2's Undefined: that would print as nothing
    and let the command run without what its author wrote. The render fails naming the job (400)."""

    def unsafe_undefined(self, obj: Any, attribute: str) -> jinja2.Undefined:
        raise SecurityError(f"the template uses {attribute!r} of a {type(obj).__name__} value, which "
                            "the sandbox does not allow")


ENV = _Sandbox(finalize=_finalize, autoescape=False, keep_trailing_newline=False)
NAMES_ENV = ENV.overlay()
NAMES_ENV.globals = {}   # so that names of globals (range, dict, ...) are reported too


@lru_cache(maxsize=8192)
def compile_template(source: str) -> jinja2.Template:
    """The compiled sandboxed template for ``source`` (compiled once per distinct source)."""
    return ENV.from_string(source)


def template_globals() -> frozenset[str]:
    """Names every template may use without declaring them (``range``, ``dict``, ...)."""
    return frozenset(ENV.globals)
