"""What a command's template is, from its text alone: the names it reads, whether it is plain
(text and ``{{ name }}`` only), and the places of its outputs in the shell text where no value
could be quoted. Checked once per distinct source (cached), when a job file is loaded.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import jinja2
from jinja2 import meta, nodes

from overseer.model.sandbox import ENV, NAMES_ENV
from overseer.model.shell_context import MARK, Context, Refusal, classify

# A template whose only Jinja syntax is ``{{ name }}`` is valid by construction: it needs no parse.
_MARKER = re.compile(r"\{[{%#]")
_SIMPLE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_NOT_SIMPLE = frozenset(("true", "false", "none", "True", "False", "None", "and", "or", "not", "in", "is",
                         "if", "else", "loop", "self", "caller", "varargs", "kwargs"))


# Nodes that bind names: with none of them, every loaded name comes from the context.
_BINDING = (nodes.For, nodes.Assign, nodes.AssignBlock, nodes.Macro, nodes.CallBlock, nodes.With, nodes.Scope,
            nodes.OverlayScope, nodes.Block, nodes.Import, nodes.FromImport, nodes.Include, nodes.Extends)
_BLOCKS_REFUSED = {
    nodes.FilterBlock: "a {% filter %} block cannot be used in a command (its output would not be "
                       "quoted): apply the filter inside {{ }}",
    nodes.CallBlock: "a {% call %} block cannot be used in a command (its output would not be quoted): "
                     "call the macro inside {{ }}",
}


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
        ast = ENV.parse(source)
    except jinja2.TemplateSyntaxError as exc:
        raise ValueError(f"template syntax error on line {exc.lineno}: {exc.message}") from None
    for node in ast.find_all(tuple(_BLOCKS_REFUSED)):
        raise ValueError(f"template error on line {node.lineno}: {_BLOCKS_REFUSED[type(node)]}")
    for node in ast.find_all((nodes.Filter, nodes.Test)):
        known = ENV.filters if isinstance(node, nodes.Filter) else ENV.tests
        if node.name not in known:
            kind = "filter" if isinstance(node, nodes.Filter) else "test"
            raise ValueError(f"template error on line {node.lineno}: no {kind} named {node.name!r}")
    if not any(True for _ in ast.find_all(_BINDING)):
        return frozenset(node.name for node in ast.find_all(nodes.Name) if node.ctx == "load")
    tracker = meta.TrackingCodeGenerator(NAMES_ENV)
    try:
        tracker.visit(ast)
    except jinja2.TemplateError as exc:
        raise ValueError(f"template error on line {getattr(exc, 'lineno', '?')}: {exc}") from None
    return frozenset(tracker.undeclared_identifiers)


def referenced_vars(source: str) -> frozenset[str]:
    """The names a template reads from its context (cached; see :func:`check_template`)."""
    return check_template(source)


def where(place: Any) -> str:
    """Where ``place`` is in the shell text, as an error message says it."""
    if isinstance(place, Refusal):
        return place.where
    return {Context.SINGLE: "inside '...'", Context.DOUBLE: 'inside "..."',
            Context.ARITH: "inside arithmetic"}.get(place, "outside quotes")


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
        raise ValueError(f"the command ends {where(places[-1])}, so the vars it does not use "
                         f"({', '.join(unused)}) cannot be appended: use them in the template")


@lru_cache(maxsize=8192)
def _layout(source: str) -> tuple[list[str], list[frozenset[str]]] | None:
    """The literal texts between a control-flow-free template's outputs, and the names each output
    reads; None for a template with control flow (its layout depends on its values)."""
    ast = ENV.parse(source)
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
