"""Where each substituted value lands in a shell command: its lexical context.

The renderer (overseer/model/render.py) renders a template with a marker (``MARK``, a NUL, which no
template text and no value may hold) where each ``{{ ... }}`` output goes, and asks
:func:`classify` what each marker is inside of. The answer decides how the value is written so
that it stays data:

- ``WORD``: unquoted shell text (at the top level, inside ``$(...)``, in a redirection): the
  value becomes shell-quoted words.
- ``SINGLE``: inside ``'...'``: the value is spliced in with each ``'`` written as ``'\\''``.
- ``DOUBLE``: inside ``"..."``: the value is spliced in with ``\\``, ``$``, `````` and ``"``
  escaped by a backslash.
- ``ARITH``: inside ``$((...))``, ``((...))`` or ``$[...]``: only an integer may go there.
- a :class:`Refusal`: anywhere else (a comment, a here-document, backquotes, ``${...}``, right
  after ``$`` or a backslash, a here-document's delimiter), and everywhere after a construct
  this lexer does not follow for sure (``$'...'``, quotes inside ``${...}``, ``case`` inside
  ``$(...)``, a here-document started inside ``$(...)`` or a quoted newline before its body):
  the renderer refuses such a use, naming the var.

It follows POSIX sh (dash, Debian's /bin/sh) and the syntax bash adds when it is /bin/sh
(``$'...'``, ``$"..."``, ``((...))``, ``$[...]``, ``<(...)``, ``>(...)``), and when the two
could read a text differently it refuses rather than guess.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from functools import lru_cache
from typing import Union

MARK = "\0"
_BLANK = " \t"
_OPERATOR = ";&|<>()"
_SPECIAL_PARAMS = "#?!$*@-0123456789"


class Context(str, enum.Enum):
    WORD = "word"
    SINGLE = "single"
    DOUBLE = "double"
    ARITH = "arith"


@dataclass(frozen=True)
class Refusal:
    """A place no value may go; ``where`` completes "used ...": e.g. "inside a comment"."""

    where: str


Place = Union[Context, Refusal]

IN_COMMENT = Refusal("inside a comment (a newline in the value would end it)")
IN_HEREDOC = Refusal("inside a here-document")
IN_DELIMITER = Refusal("in a here-document's delimiter")
IN_BACKQUOTES = Refusal("inside `...` (write $(...) instead)")
IN_PARAM = Refusal("inside ${...}")
AFTER_DOLLAR = Refusal("right after a $")
AFTER_BACKSLASH = Refusal("right after a backslash")
UNSURE = Refusal("after shell syntax whose quoting cannot be followed for sure "
                 "($'...', quotes inside ${...} or $((...)), case inside $(...), "
                 "or a here-document inside $(...))")


class _Poisoned(Exception):
    """Raised where the lexer cannot follow the text for sure."""


class _Lexer:
    def __init__(self, text: str):
        self.text = text
        self.pos = 0
        self.found: dict[int, Place] = {}   # marker position -> place
        self.subs = 0                       # depth of $( ) and <( ) around the current point

    # -- helpers ------------------------------------------------------------------------------
    def peek(self, offset: int = 0) -> str:
        i = self.pos + offset
        return self.text[i] if i < len(self.text) else ""

    def mark(self, place: Place) -> None:
        self.found[self.pos] = place
        self.pos += 1

    def escaped_pair(self) -> None:
        """At a backslash: it and the character it escapes (a marker there is refused)."""
        self.pos += 1
        if self.peek() == MARK:
            self.mark(AFTER_BACKSLASH)
        elif self.peek():
            self.pos += 1

    # -- contexts -------------------------------------------------------------------------------
    def unquoted(self, closing: bool) -> None:
        """Shell text outside quotes, up to the ``)`` that closes it (``closing``) or the end."""
        depth = 1
        word, started = "", False
        heredocs: list[tuple[str, bool]] = []
        while self.pos < len(self.text):
            c = self.text[self.pos]
            if c == MARK:
                self.mark(Context.WORD)
                word, started = "\0", True
            elif c == "\\":
                self.escaped_pair()
                word, started = "\0", True
            elif c == "'":
                self.pos += 1
                self.single(bool(heredocs))
                word, started = "\0", True
            elif c == '"':
                self.pos += 1
                self.double(bool(heredocs))
                word, started = "\0", True
            elif c == "`":
                self.pos += 1
                self.backquotes()
                word, started = "\0", True
            elif c == "$":
                self.dollar(in_double=False)
                word, started = "\0", True
            elif c == "#" and not started:
                self.comment()
            elif c == "\n":
                self._end_word(word)
                word, started = "", False
                self.pos += 1
                for delimiter, strip_tabs in heredocs:
                    self.heredoc(delimiter, strip_tabs)
                heredocs = []
            elif c in _BLANK or c in ";&|":
                self._end_word(word)
                word, started = "", False
                self.pos += 1
            elif c in "<>":
                self._end_word(word)
                word, started = "", False
                if self.peek(1) == "(":          # <(...) and >(...) (bash): unquoted inside
                    self.pos += 2
                    self.sub()
                elif c == "<" and self.peek(1) == "<" and self.peek(2) == "<":   # <<< (bash)
                    self.pos += 3
                elif c == "<" and self.peek(1) == "<":
                    self.pos += 2
                    strip_tabs = self.peek() == "-"
                    if strip_tabs:
                        self.pos += 1
                    if self.subs:
                        raise _Poisoned
                    heredocs.append((self.heredoc_word(), strip_tabs))
                else:
                    self.pos += 1
            elif c == "(":
                if not started and self.peek(1) == "(":   # ((...)): arithmetic in bash
                    self.pos += 2
                    self.arith(")", depth=2)
                else:
                    depth += 1
                    self.pos += 1
                word, started = "", False
            elif c == ")":
                self._end_word(word)
                word, started = "", False
                self.pos += 1
                depth -= 1
                if closing and depth == 0:
                    if heredocs:
                        raise _Poisoned
                    return
            else:
                word, started = (word + c if len(word) < 8 else "\0"), True
                self.pos += 1
        self._end_word(word)

    def _end_word(self, word: str) -> None:
        if word == "case" and self.subs:   # its patterns' ")" would close the $( ) for this lexer
            raise _Poisoned

    def sub(self) -> None:
        self.subs += 1
        try:
            self.unquoted(closing=True)
        finally:
            self.subs -= 1

    def single(self, heredoc_pending: bool) -> None:
        while self.pos < len(self.text):
            c = self.text[self.pos]
            if c == "'":
                self.pos += 1
                return
            if c == MARK:
                self.mark(Context.SINGLE)
                continue
            if c == "\n" and heredoc_pending:
                raise _Poisoned
            self.pos += 1

    def double(self, heredoc_pending: bool) -> None:
        while self.pos < len(self.text):
            c = self.text[self.pos]
            if c == '"':
                self.pos += 1
                return
            if c == MARK:
                self.mark(Context.DOUBLE)
            elif c == "\\":
                self.escaped_pair()
            elif c == "$":
                self.dollar(in_double=True)
            elif c == "`":
                self.pos += 1
                self.backquotes()
            else:
                if c == "\n" and heredoc_pending:
                    raise _Poisoned
                self.pos += 1

    def dollar(self, in_double: bool) -> None:
        nxt = self.peek(1)
        if nxt == MARK:
            self.pos += 1
            self.mark(AFTER_DOLLAR)
        elif nxt == "(":
            if self.peek(2) == "(":
                self.pos += 3
                self.arith(")", depth=2)
            else:
                self.pos += 2
                self.sub()
        elif nxt == "{":
            self.pos += 2
            self.param()
        elif nxt == "[":
            self.pos += 2
            self.arith("]", depth=1)
        elif nxt == "'" and not in_double:
            raise _Poisoned                     # $'...': bash and dash read it differently
        elif nxt and nxt in _SPECIAL_PARAMS:
            self.pos += 2
        else:
            self.pos += 1

    def param(self) -> None:
        """After ``${``: up to its ``}``. Nothing may be substituted inside; quotes inside are
        read differently by different shells, so they end what this lexer follows."""
        depth = 1
        while self.pos < len(self.text):
            c = self.text[self.pos]
            if c == MARK:
                self.mark(IN_PARAM)
                continue
            if c in "'\"`\\":
                raise _Poisoned
            if c == "$" and self.peek(1) in "({[":
                if self.peek(1) == "{":
                    depth += 1
                    self.pos += 2
                    continue
                raise _Poisoned
            if c == "}":
                depth -= 1
                if depth == 0:
                    self.pos += 1
                    return
            self.pos += 1

    def arith(self, close: str, depth: int) -> None:
        """Inside arithmetic, up to the ``close`` that brings ``depth`` to 0."""
        opening = "(" if close == ")" else "["
        while self.pos < len(self.text):
            c = self.text[self.pos]
            if c == MARK:
                self.mark(Context.ARITH)
                continue
            if c in "'\"`\\#":
                raise _Poisoned
            if c == "$" and self.peek(1) in "({[":
                raise _Poisoned
            if c == opening:
                depth += 1
            elif c == close:
                depth -= 1
                if depth == 0:
                    self.pos += 1
                    return
            self.pos += 1

    def backquotes(self) -> None:
        while self.pos < len(self.text):
            c = self.text[self.pos]
            if c == "`":
                self.pos += 1
                return
            if c == MARK:
                self.mark(IN_BACKQUOTES)
            elif c == "\\":
                self.pos += 1
                if self.peek() == MARK:
                    self.mark(IN_BACKQUOTES)
                elif self.peek():
                    self.pos += 1
            else:
                self.pos += 1

    def comment(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] != "\n":
            if self.text[self.pos] == MARK:
                self.mark(IN_COMMENT)
            else:
                self.pos += 1

    def heredoc_word(self) -> str:
        """The delimiter after ``<<`` or ``<<-``, quotes removed."""
        while self.peek() and self.peek() in _BLANK:
            self.pos += 1
        parts = []
        while self.pos < len(self.text):
            c = self.text[self.pos]
            if c in _BLANK or c in _OPERATOR or c == "\n":
                break
            if c == MARK:
                self.mark(IN_DELIMITER)
                raise _Poisoned
            if c in "$`":
                raise _Poisoned
            if c == "\\":
                parts.append(self.peek(1))
                self.pos += 2
            elif c in "'\"":
                end = self.text.find(c, self.pos + 1)
                if end < 0 or (c == '"' and "\\" in self.text[self.pos:end]):
                    raise _Poisoned
                parts.append(self.text[self.pos + 1:end])
                self.pos = end + 1
            else:
                parts.append(c)
                self.pos += 1
        if not parts:
            raise _Poisoned
        delimiter = "".join(parts)
        if MARK in delimiter:
            raise _Poisoned
        return delimiter

    def heredoc(self, delimiter: str, strip_tabs: bool) -> None:
        """A here-document's body: whole lines up to the one that is its delimiter."""
        while self.pos < len(self.text):
            end = self.text.find("\n", self.pos)
            end = len(self.text) if end < 0 else end
            line = self.text[self.pos:end]
            if line.endswith("\\"):   # a continued line: whether it ends the body differs
                raise _Poisoned
            if (line.lstrip("\t") if strip_tabs else line) == delimiter:
                self.pos = end + 1
                return
            at = line.find(MARK)
            while at >= 0:
                self.found[self.pos + at] = IN_HEREDOC
                at = line.find(MARK, at + 1)
            self.pos = end + 1


@lru_cache(maxsize=4096)
def classify(text: str) -> tuple[Place, ...]:
    """The place of each ``MARK`` in ``text``, in order (cached: a job's commands repeat)."""
    lexer = _Lexer(text)
    try:
        lexer.unquoted(closing=False)
    except (_Poisoned, RecursionError):
        pass
    places = []
    at = text.find(MARK)
    while at >= 0:
        places.append(lexer.found.get(at, UNSURE))
        at = text.find(MARK, at + 1)
    return tuple(places)
