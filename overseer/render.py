"""Command rendering: Jinja2 templates in a sandbox whose every ``{{ ... }}`` is shell-quoted.

A value substituted into a command is always whole shell words: a string is one word whatever
it holds (quotes, ``$(...)``, backticks, newlines, ``{{ }}``), a list is one word per item, a map
is one word of JSON. Vars the template does not use are appended as arguments.

Templates are checked once per distinct source (:func:`check_template`, cached) and compiled
once per distinct source, on first use (:func:`compile_template`, cached): rendering a command
never compiles.
"""
from __future__ import annotations

import logging
import re
import shlex
from collections.abc import Iterable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
from jinja2 import meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from overseer.exceptions import ParamError
from overseer.vars import text_of

if TYPE_CHECKING:
    from overseer.jobs import Job
    from overseer.vars import VarSpec

log = logging.getLogger(__name__)

ENV_PREFIX = "OVERSEER_VAR_"

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


def _finalize(value: Any) -> str:
    return shell_word(value)


_ENV = ImmutableSandboxedEnvironment(finalize=_finalize, autoescape=False, keep_trailing_newline=False)
_NAMES_ENV = _ENV.overlay()
_NAMES_ENV.globals = {}   # so that names of globals (range, dict, ...) are reported too


@lru_cache(maxsize=8192)
def compile_template(source: str) -> jinja2.Template:
    """The compiled sandboxed template for ``source`` (compiled once per distinct source)."""
    return _ENV.from_string(source)


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
    command nor script renders as an empty string.
    """
    if job.command is None:
        if job.script is None:
            return ""
        return shlex.join([f"scripts/{job.script}", *appended_args(job.vars, params, frozenset())])
    template = compile_template(job.command)
    try:
        text = template.render(params)
    except Exception as exc:  # noqa: BLE001 - any failure of a user template is a bad request
        raise ParamError(f"job {job.name!r}: rendering the command failed: {exc}") from None
    args = appended_args(job.vars, params, referenced_vars(job.command))
    if args:
        text = text.rstrip() + " " + shlex.join(args)
    return text


def script_argv(job: Job, params: Mapping[str, Any], root: Path) -> list[str]:
    """The argv of a ``script`` job in the snapshot ``root``: the script, then every var appended."""
    if job.script is None:
        raise ValueError(f"job {job.name!r} has no script")
    return [str(Path(root) / "scripts" / job.script), *appended_args(job.vars, params, frozenset())]


def var_environment(params: Mapping[str, Any]) -> dict[str, str]:
    """``OVERSEER_VAR_<NAME>`` for every var: text, JSON for lists and maps, true/false, '' for None."""
    return {ENV_PREFIX + name.upper(): text_of(value) for name, value in params.items()}
