"""Command rendering: Jinja2 templates in a sandbox whose every ``{{ ... }}`` output stays data.

Each output of a template is written at the last step, after every filter, as what its place in
the shell text needs (overseer/model/shell_context.py tells the place): outside quotes, shell-quoted
words (a string is one word whatever it holds, a list one word per item, a map one word of JSON);
inside ``'...'`` or ``"..."``, the text escaped for that quote, so ``echo "hello {{ who }}"``
prints the value as it is; inside ``$((...))``, an int. A place where no value can be made inert
(a comment, a here-document, backquotes, ``${...}``, right after ``$`` or a backslash) is refused:
a validation error of the job file where the place is known without values (a template with no
``{% %}`` control flow), else a 400 at the trigger. ``{% filter %}`` and ``{% call %}`` blocks,
whose output would skip that last step, are validation errors. Vars the template does not use are
appended as arguments.

Templates are checked once per distinct source (:func:`check_template`, cached) and compiled
once per distinct source, on first use (:func:`compile_template`, cached): rendering a command
never compiles.

A rendered command is bounded in size: over :data:`MAX_COMMAND_BYTES` it is refused, naming the
job and the limit, and the render stops as soon as its text passes the limit. Its time is
bounded by the caller: a template whose text alone does not bound its work (:func:`is_plain`
is false) is rendered in a worker process that is killed at its deadline
(overseer/model/render_pool.py).
"""
from __future__ import annotations

import contextvars
import logging
import re
import shlex
import subprocess
from collections.abc import Iterable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
from jinja2 import meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from overseer.exceptions import ParamError
from overseer.model.shell_context import MARK, Context, Refusal, classify
from overseer.model.vars import text_of

if TYPE_CHECKING:
    from overseer.model.job import Job
    from overseer.model.vars import VarSpec

log = logging.getLogger(__name__)

ENV_PREFIX = "OVERSEER_VAR_"
SHELL = "/bin/sh"  # what runs a ``command`` (``SHELL -c COMMAND``)

# A command runs as ``/bin/sh -c COMMAND``: one argument of exec(2), which Linux refuses at 128 KiB
# or more (MAX_ARG_STRLEN). The server may put a few hundred bytes in front (the move into the
# run's cgroup): 4 KiB are kept for that, so a command this long or shorter always starts.
MAX_COMMAND_BYTES = 128 * 1024 - 4096

# A template whose only Jinja syntax is ``{{ name }}`` is valid by construction: it needs no parse.
_MARKER = re.compile(r"\{[{%#]")
_SIMPLE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_NOT_SIMPLE = frozenset(("true", "false", "none", "True", "False", "None", "and", "or", "not", "in", "is",
                         "if", "else", "loop", "self", "caller", "varargs", "kwargs"))


# Nodes that bind names: with none of them, every loaded name comes from the context.
_BINDING = (nodes.For, nodes.Assign, nodes.AssignBlock, nodes.Macro, nodes.CallBlock, nodes.With, nodes.Scope,
            nodes.OverlayScope, nodes.Block, nodes.Import, nodes.FromImport, nodes.Include, nodes.Extends)


def shell_word(value: Any) -> str:
    """``value`` as shell text: quoted words (none for an empty list), ``''`` for None."""
    if isinstance(value, jinja2.Undefined):
        return ""
    if isinstance(value, (list, tuple)):
        return " ".join(shlex.quote(text_of(item)) for item in value)
    if value is None or isinstance(value, (str, bool, int, float, dict)):
        return shlex.quote(text_of(value))
    return shlex.quote(str(value))


class _Outputs(list):
    """The outputs of one render, and how much text they make so far."""

    __slots__ = ("size",)

    def __init__(self) -> None:
        super().__init__()
        self.size = 0


# The outputs of the render in progress: each ``{{ }}`` writes a slot ``\0<index>\0`` (no value
# and no template text holds a NUL) and its value goes here, to be written once its place is known.
_OUTPUTS: contextvars.ContextVar[_Outputs | None] = contextvars.ContextVar("overseer_render_outputs",
                                                                           default=None)
_SLOT = re.compile("\0([0-9]+)\0")
_DOUBLE_SPECIAL = re.compile(r'([\\$`"])')
_BLOCKS_REFUSED = {
    nodes.FilterBlock: "a {% filter %} block cannot be used in a command (its output would not be "
                       "quoted): apply the filter inside {{ }}",
    nodes.CallBlock: "a {% call %} block cannot be used in a command (its output would not be quoted): "
                     "call the macro inside {{ }}",
}


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
    outputs = _OUTPUTS.get()
    if outputs is None:
        raise RuntimeError("commands render only through render_command")
    value = plain(value)
    if isinstance(value, str) and "\0" in value:  # text built from outputs ({% set %} blocks, macros)
        value = _SLOT.sub(lambda m: flat_text(outputs[int(m.group(1))]), value)
        if "\0" in value:
            raise ParamError("the template produced a NUL character, which no command can hold")
    outputs.size += len(value) if isinstance(value, str) else len(flat_text(value))
    if outputs.size > MAX_COMMAND_BYTES:
        raise ParamError(_too_long(None))
    outputs.append(value)
    return f"\0{len(outputs) - 1}\0"


def _too_long(size: int | None) -> str:
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


_ENV = _Sandbox(finalize=_finalize, autoescape=False, keep_trailing_newline=False)
_NAMES_ENV = _ENV.overlay()
_NAMES_ENV.globals = {}   # so that names of globals (range, dict, ...) are reported too


@lru_cache(maxsize=8192)
def compile_template(source: str) -> jinja2.Template:
    """The compiled sandboxed template for ``source`` (compiled once per distinct source)."""
    return _ENV.from_string(source)


@lru_cache(maxsize=65536)
def is_plain(source: str) -> bool:
    """Whether ``source`` is made only of text and ``{{ name }}``: its render is as long as its
    text and its values, and as quick (no loop, call, filter or operator)."""
    return _simple_names(source) is not None


def _simple_names(source: str) -> frozenset[str] | None:
    """The names of a template made only of ``{{ name }}`` expressions, else None."""
    names = set()
    pos = 0
    while True:
        marker = _MARKER.search(source, pos)
        if marker is None:
            return frozenset(names)
        match = _SIMPLE.match(source, marker.start())
        if match is None or match.group(1) in _NOT_SIMPLE:
            return None
        names.add(match.group(1))
        pos = match.end()


@lru_cache(maxsize=65536)
def check_template(source: str) -> frozenset[str]:
    """Check ``source`` and return the names it reads from outside (its vars, or unknown names).

    Raises ValueError naming the line for a syntax error or an unknown filter or test.
    """
    simple = _simple_names(source)
    if simple is not None:
        return simple
    try:
        ast = _ENV.parse(source)
    except jinja2.TemplateSyntaxError as exc:
        raise ValueError(f"template syntax error on line {exc.lineno}: {exc.message}") from None
    for node in ast.find_all(tuple(_BLOCKS_REFUSED)):
        raise ValueError(f"template error on line {node.lineno}: {_BLOCKS_REFUSED[type(node)]}")
    for node in ast.find_all((nodes.Filter, nodes.Test)):
        known = _ENV.filters if isinstance(node, nodes.Filter) else _ENV.tests
        if node.name not in known:
            kind = "filter" if isinstance(node, nodes.Filter) else "test"
            raise ValueError(f"template error on line {node.lineno}: no {kind} named {node.name!r}")
    if not any(True for _ in ast.find_all(_BINDING)):
        return frozenset(node.name for node in ast.find_all(nodes.Name) if node.ctx == "load")
    tracker = meta.TrackingCodeGenerator(_NAMES_ENV)
    try:
        tracker.visit(ast)
    except jinja2.TemplateError as exc:
        raise ValueError(f"template error on line {getattr(exc, 'lineno', '?')}: {exc}") from None
    return frozenset(tracker.undeclared_identifiers)


def referenced_vars(source: str) -> frozenset[str]:
    """The names a template reads from its context (cached; see :func:`check_template`)."""
    return check_template(source)


def template_globals() -> frozenset[str]:
    """Names every template may use without declaring them (``range``, ``dict``, ...)."""
    return frozenset(_ENV.globals)


def appended_args(specs: Iterable[VarSpec], params: Mapping[str, Any],
                  referenced: frozenset[str]) -> list[str]:
    """The argv words (unquoted) for the vars the template does not use.

    Positional vars first, in definition order (a list gives one word per item, None an empty
    word), then option vars: ``--name value`` (a list repeats ``--name`` per item), a true bool
    option as ``--name``; false, None and empty lists are left out.
    """
    positional: list[str] = []
    options: list[str] = []
    for spec in specs:
        if spec.name in referenced or spec.name not in params:
            continue
        value = params[spec.name]
        if not spec.option:
            if isinstance(value, (list, tuple)):
                positional.extend(text_of(item) for item in value)
            else:
                positional.append(text_of(value))
            continue
        flag = f"--{spec.name}"
        if value is True:
            options.append(flag)
        elif value is False or value is None:
            continue
        elif isinstance(value, (list, tuple)):
            for item in value:
                options.extend((flag, text_of(item)))
        else:
            options.extend((flag, text_of(value)))
    return positional + options


def render_command(job: Job, params: Mapping[str, Any]) -> str:
    """The shell command line of one execution: the rendered template plus the appended vars.

    A ``script`` job renders as ``scripts/PATH ARGS...`` (for display); a job with neither
    command nor script renders as an empty string. A value whose place in the command cannot be
    made inert is a ParamError naming the var.
    """
    if job.command is None:
        if job.script is None:
            return ""
        return shlex.join([f"scripts/{job.script}", *appended_args(job.vars, params, frozenset())])
    template = compile_template(job.command)
    outputs = _Outputs()
    token = _OUTPUTS.set(outputs)
    try:
        # A plain template's text is as long as its values: rendered whole, and measured after.
        text = template.render(params) if is_plain(job.command) else _generate(template, params)
    except ParamError as exc:
        raise ParamError(f"job {job.name!r}: {exc}") from None
    except MemoryError:
        raise ParamError(f"job {job.name!r}: rendering the command ran out of memory") from None
    except Exception as exc:  # noqa: BLE001 - any failure of a user template is a bad request
        raise ParamError(f"job {job.name!r}: rendering the command failed: {exc}") from None
    finally:
        _OUTPUTS.reset(token)
    command = _written_command(job, params, text, outputs)
    if len(command) * 4 > MAX_COMMAND_BYTES:  # else short enough in any encoding
        size = len(command.encode("utf-8", "surrogatepass"))
        if size > MAX_COMMAND_BYTES:
            raise ParamError(f"job {job.name!r}: {_too_long(size)}")
    return command


def _generate(template: jinja2.Template, params: Mapping[str, Any]) -> str:
    """The template's text (outputs as slots), stopped as soon as it passes the size limit."""
    parts, size = [], 0
    for part in template.generate(params):
        size += len(part)
        if size > MAX_COMMAND_BYTES:
            raise ParamError(_too_long(None))
        parts.append(part)
    return "".join(parts)


def _written_command(job: Job, params: Mapping[str, Any], text: str, outputs: list) -> str:
    """The rendered ``text`` with each output written for its place, and the unused vars."""
    args = appended_args(job.vars, params, referenced_vars(job.command))
    if not outputs and not args:
        return text
    pieces = _SLOT.split(text)   # text, slot, text, slot, ..., text
    literals, slots = pieces[0::2], pieces[1::2]
    if args:
        literals[-1] = literals[-1].rstrip()
        if not slots:
            literals[0] = literals[0].rstrip()
    if any(MARK in literal for literal in literals):
        raise ParamError(f"job {job.name!r}: the template produced a NUL character, which no command holds")
    places = classify(MARK.join(literals) + (" " + MARK if args else ""))
    written = [_written(job, params, outputs[int(slot)], place) for slot, place in zip(slots, places)]
    if args:
        if places[-1] is not Context.WORD:
            raise ParamError(f"job {job.name!r}: the command ends {_where(places[-1])}, so the vars it does "
                             f"not use ({', '.join(_unused(job, params))}) cannot be appended: use them in "
                             "the template")
        written.append(" " + shlex.join(args))
        literals.append("")
    if any("\n" in piece for piece in written):
        fills = [piece if "\n" not in piece else "1" if place is Context.ARITH else "x"
                 for piece, place in zip(written, places)]
        if args and "\n" in written[-1]:
            fills[-1] = " x"
        _check_syntax(job, literals, fills)
    return "".join(literal + piece for literal, piece in zip(literals, [*written, ""]))


def _check_syntax(job: Job, literals: list[str], fills: list[str]) -> None:
    """Refuse a value holding a newline in a command that is not valid shell: a shell that recovers
    from the error (bash, where it is /bin/sh, reads on after some) starts again at a line of the
    value, and would run it. ``fills`` stand for the values, a one-line word for each that has a
    newline, so the text checked is the command's own syntax."""
    text = "".join(literal + fill for literal, fill in zip(literals, [*fills, ""]))
    problem = _syntax_error(SHELL, text)
    if problem is not None:
        raise ParamError(f"job {job.name!r}: the command is not valid shell ({SHELL} -n: {problem}), so no "
                         "value holding a newline can be placed in it: fix the command")


@lru_cache(maxsize=1024)
def _syntax_error(shell: str, text: str) -> str | None:
    """What ``shell -n`` says of ``text`` (its first line), None when it parses."""
    try:
        done = subprocess.run([shell, "-n", "-c", text], stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot be checked: {exc}"
    if done.returncode == 0:
        return None
    lines = done.stderr.decode("utf-8", "replace").strip().splitlines()
    return lines[0] if lines else f"exit status {done.returncode}"


def _written(job: Job, params: Mapping[str, Any], value: Any, place: Any) -> str:
    """``value`` as shell text that stays data at ``place``."""
    if place is Context.WORD:
        return shell_word(value)
    if place is Context.SINGLE:
        return flat_text(value).replace("'", "'\\''")
    if place is Context.DOUBLE:
        return _DOUBLE_SPECIAL.sub(r"\\\1", flat_text(value))
    if place is Context.ARITH and type(value) is int:
        return str(value) if value >= 0 else f"({value})"
    names = [name for name, given in params.items() if plain(given) == value or given is value]
    what = f"var {names[0]!r}" if len(names) == 1 else "a value"
    if place is Context.ARITH:
        raise ParamError(f"job {job.name!r}: {what} is used inside shell arithmetic, where only an int "
                         f"can go, not {type(value).__name__}")
    hint = (f'; use {{{{ {names[0]} }}}} as a word of its own, or read "$OVERSEER_VAR_{names[0].upper()}" '
            "in the command" if len(names) == 1 else "")
    raise ParamError(f"job {job.name!r}: {what} is used {_where(place)}, where no value can be quoted{hint}")


def _where(place: Any) -> str:
    if isinstance(place, Refusal):
        return place.where
    return {Context.SINGLE: "inside '...'", Context.DOUBLE: 'inside "..."',
            Context.ARITH: "inside arithmetic"}.get(place, "outside quotes")


def _unused(job: Job, params: Mapping[str, Any]) -> list[str]:
    referenced = referenced_vars(job.command or "")
    return [spec.name for spec in job.vars if spec.name not in referenced and spec.name in params]


def check_quoting(source: str, types: Mapping[str, str]) -> None:
    """Raise ValueError naming the var for a use the renderer would refuse whatever the values.

    ``types`` maps each declared var to its type. Only templates whose outputs follow from their
    text alone (no ``{% %}`` control flow) are judged here; the others are judged at each render.
    """
    layout = _layout(source)
    if layout is None:
        return
    literals, uses = layout
    unused = [name for name in types if name not in check_template(source)]
    if unused:
        literals = [*literals[:-1], literals[-1].rstrip()]
    skeleton = MARK.join(literals) + (" " + MARK if unused else "")
    places = classify(skeleton)
    for names, place in zip(uses, places):
        name = sorted(names)[0] if len(names) == 1 else None
        what = f"var {name!r}" if name else "an expression"
        if isinstance(place, Refusal):
            hint = (f': use {{{{ {name} }}}} as a word of its own, or read "$OVERSEER_VAR_{name.upper()}" '
                    "in the command" if name else "")
            raise ValueError(f"{what} is used {place.where}, where no value can be quoted{hint}")
        if place is Context.ARITH and name and types.get(name, "int") != "int":
            raise ValueError(f"{what} (type {types[name]}) is used inside shell arithmetic, where only an "
                             "int var can go")
    if unused and places[-1] is not Context.WORD:
        raise ValueError(f"the command ends {_where(places[-1])}, so the vars it does not use "
                         f"({', '.join(unused)}) cannot be appended: use them in the template")


@lru_cache(maxsize=8192)
def _layout(source: str) -> tuple[list[str], list[frozenset[str]]] | None:
    """The literal texts between a control-flow-free template's outputs, and the names each output
    reads; None for a template with control flow (its layout depends on its values)."""
    ast = _ENV.parse(source)
    literals, uses, text = [], [], []
    for node in ast.body:
        if not isinstance(node, nodes.Output):
            if isinstance(node, (nodes.Assign, nodes.ExprStmt)) or (
                    isinstance(node, nodes.Output) and not node.nodes):
                continue
            return None
        for child in node.nodes:
            if isinstance(child, nodes.TemplateData):
                text.append(child.data)
            else:
                literals.append("".join(text))
                text = []
                found = [child, *child.find_all(nodes.Name)] if isinstance(child, nodes.Name) else \
                    list(child.find_all(nodes.Name))
                uses.append(frozenset(n.name for n in found if n.ctx == "load"))
    literals.append("".join(text))
    if literals and literals[-1].endswith("\n"):
        literals[-1] = literals[-1][:-1]   # keep_trailing_newline=False drops it at render
    return literals, uses


def script_argv(job: Job, params: Mapping[str, Any], root: Path) -> list[str]:
    """The argv of a ``script`` job in the snapshot ``root``: the script, then every var appended."""
    if job.script is None:
        raise ValueError(f"job {job.name!r} has no script")
    return [str(Path(root) / "scripts" / job.script), *appended_args(job.vars, params, frozenset())]


def var_environment(params: Mapping[str, Any]) -> dict[str, str]:
    """``OVERSEER_VAR_<NAME>`` for every var: text, JSON for lists and maps, true/false, '' for None."""
    return {ENV_PREFIX + name.upper(): text_of(value) for name, value in params.items()}
