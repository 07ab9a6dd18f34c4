"""``CelExpr`` selector values: the CEL subset Tetragon compiles to BPF, parsed and typed.

A ``matchArgs`` entry with ``operator: CelExpr`` has exactly one value, a CEL expression
over the hook's arguments ``arg0``..``argN`` (positions in ``args``) that must be a
boolean. Tetragon type-checks it with these types: ``int`` (64-bit signed arguments and
plain literals), ``uint`` (64-bit unsigned, literals with a ``u`` suffix), ``s32`` / ``u32``
(32-bit arguments, ``int32(x)`` / ``uint32(x)``) and ``bool``; operators ``== !=`` (same
type), ``< <= > >= + -`` (same integer type), ``&& || !`` (bools). Anything else (another
function, mixing int and uint, a string argument) is refused there, and so here.

Pure logic: :func:`check` returns the problem or None.
"""

from __future__ import annotations

import re

from vigil.policy.spec import ArgType

_TOKEN = re.compile(r"\s*(?:(?P<num>0[xX][0-9a-fA-F]+[uU]?|[0-9]+[uU]?)|"
                    r"(?P<id>[A-Za-z_][A-Za-z0-9_]*)|"
                    r"(?P<op>&&|\|\||==|!=|<=|>=|[<>()+\-!,]))")
_ARG_TYPES = {ArgType.INT64: "int", ArgType.UINT64: "uint", ArgType.INT32: "s32",
              ArgType.UINT32: "u32"}
_CASTS = {"int32": ("int", "s32"), "uint32": ("uint", "u32")}
_INTS = ("int", "uint", "s32", "u32")


class CelError(ValueError):
    pass


class _Parser:
    def __init__(self, text: str, arg_types: list[ArgType | None]) -> None:
        self.toks: list[tuple[str, str]] = []
        pos = 0
        text = text.rstrip()
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if not m or m.end() == pos:
                raise CelError(f"unexpected character {text[pos:].lstrip()[:1]!r}")
            kind = m.lastgroup or "op"
            self.toks.append((kind, m.group(kind)))
            pos = m.end()
        self.i = 0
        self.arg_types = arg_types

    def peek(self) -> str | None:
        return self.toks[self.i][1] if self.i < len(self.toks) else None

    def take(self, want: str | None = None) -> tuple[str, str]:
        if self.i >= len(self.toks):
            raise CelError("unexpected end of expression")
        tok = self.toks[self.i]
        if want is not None and tok[1] != want:
            raise CelError(f"expected {want!r}, got {tok[1]!r}")
        self.i += 1
        return tok

    def parse(self) -> str:
        t = self.or_()
        if self.i != len(self.toks):
            raise CelError(f"unexpected {self.toks[self.i][1]!r}")
        return t

    def _logic(self, op: str, sub) -> str:  # type: ignore[no-untyped-def]
        t = sub()
        while self.peek() == op:
            self.take()
            u = sub()
            if not {t, u} <= {"bool", "?"}:
                raise CelError(f"{op} needs booleans, got {t} and {u}")
        return t

    def or_(self) -> str:
        return self._logic("||", self.and_)

    def and_(self) -> str:
        return self._logic("&&", self.eq)

    def eq(self) -> str:
        t = self.rel()
        while self.peek() in ("==", "!="):
            op = self.take()[1]
            u = self.rel()
            if t != u and "?" not in (t, u):
                raise CelError(f"no matching overload for {t} {op} {u}")
            t = "bool"
        return t

    def rel(self) -> str:
        t = self.add()
        while self.peek() in ("<", "<=", ">", ">="):
            op = self.take()[1]
            u = self.add()
            if "?" not in (t, u) and (t != u or t not in _INTS):
                raise CelError(f"no matching overload for {t} {op} {u}")
            t = "bool"
        return t

    def add(self) -> str:
        t = self.unary()
        while self.peek() in ("+", "-"):
            op = self.take()[1]
            u = self.unary()
            if "?" not in (t, u) and (t != u or t not in _INTS):
                raise CelError(f"no matching overload for {t} {op} {u}")
            t = u if t == "?" else t
        return t

    def unary(self) -> str:
        if self.peek() == "!":
            self.take()
            t = self.unary()
            if t not in ("bool", "?"):
                raise CelError(f"! needs a boolean, got {t}")
            return "bool"
        if self.peek() == "-" and self.i + 1 < len(self.toks) and \
                self.toks[self.i + 1][0] == "num":
            self.take()
            kind, text = self.take()
            if text[-1] in "uU":
                raise CelError(f"-{text}: an unsigned literal cannot be negative")
            return "int"
        return self.primary()

    def primary(self) -> str:
        kind, text = self.take()
        if kind == "num":
            return "uint" if text[-1] in "uU" else "int"
        if text == "(":
            t = self.or_()
            self.take(")")
            return t
        if kind == "id":
            if text in ("true", "false"):
                return "bool"
            if text in _CASTS:
                self.take("(")
                t = self.or_()
                self.take(")")
                want, out = _CASTS[text]
                if t not in (want, "?"):
                    raise CelError(f"{text}() takes an {want}, got {t}")
                return out
            m = re.fullmatch(r"arg([0-9]+)", text)
            if m:
                k = int(m.group(1))
                if k >= len(self.arg_types):
                    raise CelError(f"{text}: the hook has {len(self.arg_types)} args")
                at = self.arg_types[k]
                if at is None:
                    return "?"  # type not known yet (tracepoint auto): any integer
                t = _ARG_TYPES.get(at.canonical)
                if t is None:
                    raise CelError(f"{text} is of type {at.value}, which CEL expressions "
                                   "cannot use (64- or 32-bit integers only)")
                return t
            raise CelError(f"undeclared reference to {text!r}")
        raise CelError(f"unexpected {text!r}")


def check(expr: str, arg_types: list[ArgType | None]) -> str | None:
    """Why ``expr`` is not a valid CelExpr value for a hook whose args have these types
    (None: not known yet), or None when it is."""
    try:
        t = _Parser(expr, arg_types).parse()
    except CelError as err:
        return f"invalid CEL expression {expr!r}: {err}"
    if t not in ("bool", "?"):
        return f"CEL expression {expr!r} is of type {t}, not bool"
    return None


__all__ = ["check"]
