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

Templates are checked once per distinct source, when their job file is loaded
(overseer/model/templates.py), and compiled once per distinct source, on first use, in the sandbox
of overseer/model/sandbox.py: rendering a command never compiles.

A rendered command is bounded in size: over :data:`MAX_COMMAND_BYTES` it is refused, naming the
job and the limit, and the render stops as soon as its text passes the limit. Its time is
bounded by the caller: a template whose text alone does not bound its work (``is_plain``
is false) is rendered in a worker process that is killed at its deadline
(overseer/model/render_pool.py).
"""
from __future__ import annotations

import logging
import re
import shlex
import subprocess
from collections.abc import Iterable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2

from overseer.exceptions import ParamError
from overseer.model.sandbox import (
    MAX_COMMAND_BYTES,
    OUTPUTS,
    SLOT,
    Outputs,
    compile_template,
    flat_text,
    plain,
    too_long,
)
from overseer.model.shell_context import MARK, Context, classify
from overseer.model.templates import is_plain, referenced_vars, where
from overseer.model.vars import text_of

if TYPE_CHECKING:
    from overseer.model.job import Job
    from overseer.model.vars import VarSpec

log = logging.getLogger(__name__)

ENV_PREFIX = "OVERSEER_VAR_"
SHELL = "/bin/sh"  # what runs a ``command`` (``SHELL -c COMMAND``)
_DOUBLE_SPECIAL = re.compile(r'([\\$`"])')


def shell_word(value: Any) -> str:
    """``value`` as shell text: quoted words (none for an empty list), ``''`` for None."""
    if isinstance(value, jinja2.Undefined):
        return ""
    if isinstance(value, (list, tuple)):
        return " ".join(shlex.quote(text_of(item)) for item in value)
    if value is None or isinstance(value, (str, bool, int, float, dict)):
        return shlex.quote(text_of(value))
    return shlex.quote(str(value))


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
    outputs = Outputs()
    token = OUTPUTS.set(outputs)
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
        OUTPUTS.reset(token)
    command = _written_command(job, params, text, outputs)
    if len(command) * 4 > MAX_COMMAND_BYTES:  # else short enough in any encoding
        size = len(command.encode("utf-8", "surrogatepass"))
        if size > MAX_COMMAND_BYTES:
            raise ParamError(f"job {job.name!r}: {too_long(size)}")
    return command


def _generate(template: jinja2.Template, params: Mapping[str, Any]) -> str:
    """The template's text (outputs as slots), stopped as soon as it passes the size limit."""
    parts, size = [], 0
    for part in template.generate(params):
        size += len(part)
        if size > MAX_COMMAND_BYTES:
            raise ParamError(too_long(None))
        parts.append(part)
    return "".join(parts)


def _written_command(job: Job, params: Mapping[str, Any], text: str, outputs: list) -> str:
    """The rendered ``text`` with each output written for its place, and the unused vars."""
    args = appended_args(job.vars, params, referenced_vars(job.command))
    if not outputs and not args:
        return text
    pieces = SLOT.split(text)   # text, slot, text, slot, ..., text
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
            raise ParamError(f"job {job.name!r}: the command ends {where(places[-1])}, so the vars it does "
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
    raise ParamError(f"job {job.name!r}: {what} is used {where(place)}, where no value can be quoted{hint}")


def _unused(job: Job, params: Mapping[str, Any]) -> list[str]:
    referenced = referenced_vars(job.command or "")
    return [spec.name for spec in job.vars if spec.name not in referenced and spec.name in params]


def script_argv(job: Job, params: Mapping[str, Any], root: Path) -> list[str]:
    """The argv of a ``script`` job in the snapshot ``root``: the script, then every var appended."""
    if job.script is None:
        raise ValueError(f"job {job.name!r} has no script")
    return [str(Path(root) / "scripts" / job.script), *appended_args(job.vars, params, frozenset())]


def var_environment(params: Mapping[str, Any]) -> dict[str, str]:
    """``OVERSEER_VAR_<NAME>`` for every var: text, JSON for lists and maps, true/false, '' for None."""
    return {ENV_PREFIX + name.upper(): text_of(value) for name, value in params.items()}
