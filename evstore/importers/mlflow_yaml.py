"""A reader for the flat ``meta.yaml`` files of MLflow's file store, without PyYAML.

MLflow writes them with ``yaml.safe_dump(data, default_flow_style=False,
allow_unicode=True)``: a top-level block mapping whose keys are identifiers and whose
values are ints, ``null``, empty flow collections (``{}``, ``[]``) or strings. Strings may
be plain, single- or double-quoted, and long or multi-line ones are folded over several
indented lines. The scalar scanning below follows PyYAML's scanner rules for exactly
those forms, so a value reads back as ``yaml.safe_load`` would read it. A nested block
(a deleted experiment's ``tags:`` mapping) is skipped and read as ``NESTED``; the file
store keeps the real values elsewhere. With ``nested=True`` a nested block mapping of
scalars one level deep (a run input's ``tags:``) is read as a dict instead. Anything else
is refused with ``ValueError``.
"""

from __future__ import annotations

import re
from typing import Any

#: The value given to a key whose value is a nested block collection (not read).
NESTED: Any = type("Nested", (), {"__repr__": lambda self: "NESTED"})()

_BREAKS = "\r\n\x85\u2028\u2029"
_BLANK_OR_END = "\0 \t" + _BREAKS
_KEY = re.compile(r"([A-Za-z_][A-Za-z0-9_.-]*):(?=[ \t\r\n]|$)")
# PyYAML's implicit resolvers for ints and floats (YAML 1.1), anchored at both ends.
_INT = re.compile(
    r"(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)"
    r"|[-+]?0x[0-9a-fA-F_]+|[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+)\Z"
)
_FLOAT = re.compile(
    r"(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?"
    r"|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))\Z"
)
_NULLS = {"", "~", "null", "Null", "NULL"}
_TRUES = {"yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON"}
_FALSES = {"no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF"}
_ESCAPES = {
    "0": "\0", "a": "\x07", "b": "\x08", "t": "\t", "\t": "\t", "n": "\n", "v": "\x0b",
    "f": "\x0c", "r": "\r", "e": "\x1b", " ": " ", '"': '"', "\\": "\\", "/": "/",
    "N": "\x85", "_": "\xa0", "L": "\u2028", "P": "\u2029",
}  # fmt: skip
_ESCAPE_CODES = {"x": 2, "u": 4, "U": 8}


def parse_flat_yaml(text: str, *, nested: bool = False) -> dict[str, Any]:
    """The top-level mapping of a ``meta.yaml`` file written by MLflow; with ``nested``,
    one-level nested mappings of scalars are read too, else they are ``NESTED``."""
    return _Scanner(text.removeprefix("\ufeff"), nested).mapping()


# A tag's key: a plain scalar of letters (any script), digits, '_', '.' and '-', as
# PyYAML writes one unquoted with ``allow_unicode`` (MLflow's file store does).
_NESTED_KEY = re.compile(r"( +)([^\W\d][\w.-]*):(?=[ \t\r\n]|$)")


class _Scanner:
    def __init__(self, text: str, nested: bool = False) -> None:
        self.text = text + "\0"
        self.pos = 0
        self.nested = nested
        self.indent = 1  # a plain scalar's continuation lines start at this column or later

    def peek(self, ahead: int = 0) -> str:
        index = self.pos + ahead
        return self.text[index] if index < len(self.text) else "\0"

    def fail(self, what: str) -> ValueError:
        line = self.text.count("\n", 0, self.pos) + 1
        return ValueError(f"{what} at line {line}")

    def column(self) -> int:
        start = max(self.text.rfind(ch, 0, self.pos) for ch in _BREAKS)
        return self.pos - start - 1

    # --- the document ---------------------------------------------------------------

    def mapping(self) -> dict[str, Any]:
        result: dict[str, Any] = {}
        self.skip_blank_lines()
        if self.text.startswith("{}", self.pos):  # an empty document mapping
            self.pos += 2
            self.end_of_line()
            self.skip_blank_lines()
        while self.peek() != "\0":
            match = _KEY.match(self.text, self.pos)
            if match is None:
                raise self.fail("expected 'key:'")
            self.pos = match.end()
            result[match.group(1)] = self.value()
            self.skip_blank_lines()
        return result

    def value(self) -> Any:
        while self.peek() in " \t":
            self.pos += 1
        ch = self.peek()
        if ch == "#" or ch in _BREAKS or ch == "\0":
            self.end_of_line()
            if self.nested and self.indent == 1 and _NESTED_KEY.match(self.text, self.pos):
                return self.nested_mapping()
            self.skip_nested_block()
            return NESTED
        if ch in "'\"":
            value: Any = self.quoted(double=ch == '"')
            self.end_of_line()
        elif self.text.startswith(("{}", "[]"), self.pos):
            value = {} if ch == "{" else []
            self.pos += 2
            self.end_of_line()
        elif ch in "{[|>&*!%@`":
            raise self.fail(f"unsupported YAML construct {ch!r}")
        else:
            start = self.pos
            value = resolve_plain(self.plain())
            crossed = max(self.text.rfind(ch, start, self.pos) for ch in _BREAKS)
            if crossed >= start:  # it ended on a later line: back to that line's start
                self.pos = crossed + 1
            else:
                self.end_of_line()
        return value

    def nested_mapping(self) -> dict[str, Any]:
        """A block mapping of scalars indented under a key, all keys at one column."""
        result: dict[str, Any] = {}
        first = _NESTED_KEY.match(self.text, self.pos)
        assert first is not None
        column = len(first.group(1))
        self.indent = column + 1
        try:
            while (match := _NESTED_KEY.match(self.text, self.pos)) and len(match.group(1)) == column:
                self.pos = match.end()
                value = self.value()
                if value is NESTED:
                    raise self.fail("a nested collection two levels deep")
                result[match.group(2)] = value
                self.skip_blank_lines()
        finally:
            self.indent = 1
        if self.peek() in " \t":
            raise self.fail("a nested line at another indentation")
        return result

    def end_of_line(self) -> None:
        while self.peek() in " \t":
            self.pos += 1
        if self.peek() == "#":
            while self.peek() not in _BREAKS + "\0":
                self.pos += 1
        if self.peek() == "\0":
            return
        if self.peek() not in _BREAKS:
            raise self.fail(f"unexpected {self.peek()!r} after a value")
        self.line_break()

    def skip_blank_lines(self) -> None:
        while True:
            start = self.pos
            while self.peek() in " \t":
                self.pos += 1
            if self.peek() == "#":
                while self.peek() not in _BREAKS + "\0":
                    self.pos += 1
            if self.peek() in _BREAKS:
                self.line_break()
                continue
            if self.peek() != "\0":
                self.pos = start
            return

    def skip_nested_block(self) -> None:
        # A nested collection: indented lines, '- ' items at column 0, and blank lines.
        while self.peek() != "\0":
            ch = self.peek()
            if ch in " \t" or ch in _BREAKS or (ch == "-" and self.peek(1) in _BLANK_OR_END):
                while self.peek() not in _BREAKS + "\0":
                    self.pos += 1
                if self.peek() != "\0":
                    self.line_break()
            else:
                return

    def line_break(self) -> str:
        ch = self.peek()
        if ch in "\r\n\x85":
            self.pos += 2 if self.text.startswith("\r\n", self.pos) else 1
            return "\n"
        if ch in "\u2028\u2029":
            self.pos += 1
            return ch
        return ""

    def document_marker(self) -> bool:
        return self.text.startswith(("---", "..."), self.pos) and self.peek(3) in _BLANK_OR_END

    # --- plain scalars (PyYAML's scan_plain, block context, indent 1) ------------------

    def plain(self) -> str:
        chunks: list[str] = []
        spaces: list[str] = []
        while self.peek() != "#":
            length = 0
            while True:
                ch = self.peek(length)
                if ch in _BLANK_OR_END or (ch == ":" and self.peek(length + 1) in _BLANK_OR_END):
                    break
                length += 1
            if length == 0:
                break
            chunks.extend(spaces)
            chunks.append(self.text[self.pos : self.pos + length])
            self.pos += length
            spaces = self.plain_spaces()
            if not spaces or self.peek() == "#" or self.column() < self.indent:
                break
        return "".join(chunks)

    def plain_spaces(self) -> list[str]:
        chunks: list[str] = []
        start = self.pos
        while self.peek() == " ":
            self.pos += 1
        whitespaces = self.text[start : self.pos]
        if self.peek() in _BREAKS:
            line_break = self.line_break()
            if self.document_marker():
                return []
            breaks: list[str] = []
            while self.peek() in " " + _BREAKS:
                if self.peek() == " ":
                    self.pos += 1
                else:
                    breaks.append(self.line_break())
                    if self.document_marker():
                        return []
            if line_break != "\n":
                chunks.append(line_break)
            elif not breaks:
                chunks.append(" ")
            chunks.extend(breaks)
        elif whitespaces:
            chunks.append(whitespaces)
        return chunks

    # --- quoted scalars (PyYAML's scan_flow_scalar) ---------------------------------

    def quoted(self, double: bool) -> str:
        quote = self.peek()
        self.pos += 1
        chunks = self.quoted_non_spaces(double)
        while self.peek() != quote:
            chunks.extend(self.quoted_spaces())
            chunks.extend(self.quoted_non_spaces(double))
        self.pos += 1
        return "".join(chunks)

    def quoted_non_spaces(self, double: bool) -> list[str]:
        chunks: list[str] = []
        while True:
            length = 0
            while self.peek(length) not in "'\"\\" + _BLANK_OR_END:
                length += 1
            if length:
                chunks.append(self.text[self.pos : self.pos + length])
                self.pos += length
            ch = self.peek()
            if not double and ch == "'" and self.peek(1) == "'":
                chunks.append("'")
                self.pos += 2
            elif (double and ch == "'") or (not double and ch in '"\\'):
                chunks.append(ch)
                self.pos += 1
            elif double and ch == "\\":
                self.pos += 1
                chunks.extend(self.escape())
            else:
                return chunks

    def escape(self) -> list[str]:
        ch = self.peek()
        if ch in _ESCAPES:
            self.pos += 1
            return [_ESCAPES[ch]]
        if ch in _ESCAPE_CODES:
            length = _ESCAPE_CODES[ch]
            digits = self.text[self.pos + 1 : self.pos + 1 + length]
            if len(digits) != length or not all(c in "0123456789abcdefABCDEF" for c in digits):
                raise self.fail("bad escape in a double-quoted scalar")
            self.pos += 1 + length
            return [chr(int(digits, 16))]
        if ch in _BREAKS:
            self.line_break()
            return self.quoted_breaks()
        raise self.fail(f"unknown escape \\{ch}")

    def quoted_spaces(self) -> list[str]:
        start = self.pos
        while self.peek() in " \t":
            self.pos += 1
        whitespaces = self.text[start : self.pos]
        ch = self.peek()
        if ch == "\0":
            raise self.fail("unterminated quoted scalar")
        if ch in _BREAKS:
            line_break = self.line_break()
            breaks = self.quoted_breaks()
            if line_break != "\n":
                return [line_break, *breaks]
            return [*breaks] if breaks else [" "]
        return [whitespaces]

    def quoted_breaks(self) -> list[str]:
        chunks: list[str] = []
        while True:
            if self.document_marker():
                raise self.fail("document marker inside a quoted scalar")
            while self.peek() in " \t":
                self.pos += 1
            if self.peek() in _BREAKS:
                chunks.append(self.line_break())
            else:
                return chunks


def resolve_plain(text: str) -> Any:
    """The value of a plain scalar, typed as PyYAML's safe loader types it (not dates)."""
    if text in _NULLS:
        return None
    if text in _TRUES:
        return True
    if text in _FALSES:
        return False
    if _INT.match(text):
        return _sexagesimal(text, int) if ":" in text else _int(text.replace("_", ""))
    if _FLOAT.match(text):
        value = text.replace("_", "").lower()
        if value.lstrip("+-") == ".inf":
            return float("-inf") if value.startswith("-") else float("inf")
        if value == ".nan":
            return float("nan")
        return _sexagesimal(text, float) if ":" in text else float(value)
    return text


def _int(value: str) -> int:
    sign = -1 if value.startswith("-") else 1
    digits = value.lstrip("+-")
    if digits.startswith(("0b", "0x")):
        return sign * int(digits, 0)
    if digits != "0" and digits.startswith("0"):
        return sign * int(digits, 8)
    return sign * int(digits)


def _sexagesimal(text: str, kind: type) -> Any:
    value = text.replace("_", "")
    sign = -1 if value.startswith("-") else 1
    total = kind(0)
    for part in value.lstrip("+-").split(":"):
        total = total * 60 + kind(part)
    return sign * total
