"""``CelExpr`` selector values: the CEL subset Tetragon compiles to BPF, parsed and typed.

A ``matchArgs`` entry with ``operator: CelExpr`` has exactly one value, a CEL expression
over the hook's arguments ``arg0``..``argN`` (positions in ``args``) that must be a
boolean. Tetragon type-checks it with these types: ``int`` (64-bit signed arguments and
plain literals), ``uint`` (64-bit unsigned, literals with a ``u`` suffix), ``s32`` / ``u32``
(32-bit arguments, ``int32(x)`` / ``uint32(x)``) and ``bool``; operators ``== !=`` (same
type), ``< <= > >= + -`` (same integer type), ``&& || !`` (bools). Anything else (another
function, mixing int and uint, a string argument) is refused there, and so here.

Tetragon compiles the expression to BPF instructions; Vigil compiles it to a short postfix
program (:func:`compile_expr`: push an argument or a constant, binary and unary ops) that
``bpf/generic.bpf.c`` runs with a bounded loop. Typing is applied here: ``+``/``-`` on
``s32``/``u32`` wrap in 32 bits (as Tetragon's 32-bit loads and compares do), on ``int`` /
``uint`` in 64 bits (two's complement, no overflow error, as in Tetragon's BPF);
``int32()``/``uint32()`` keep the low 32 bits, sign- or zero-extended; ``<`` on ``uint``
and ``u32`` compares unsigned. ``&&``/``||`` evaluate both sides (nothing has side effects).

The parser is this module's own: the subset is a dozen tokens, and the typing rules
(``s32``/``u32`` and the casts) are Tetragon's, not standard CEL's, so a full CEL
library's parse tree would still need this checker and code generator on top.

Pure logic: :func:`check` returns the problem or None.
"""

from __future__ import annotations

import re
from collections.abc import Callable

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


#: one instruction of a compiled program: (op, argument index, constant)
Insn = tuple[int, int, int]

# operation codes, the same numbers as ``enum vg_cel_op`` in abi.h (pure logic: no import
# of vigil.abi here; tests/unit check the two agree)
ARG, CONST, ADD, SUB, S32, U32, EQ, NE, LT, LE, LTU, LEU, NOT, AND, OR, SWAP = range(1, 17)
#: depth of the kernel's value stack (VG_CEL_STACK)
STACK_MAX = 8
#: the ARG index that pushes the hook's return value (matchReturnArgs)
RET = 0xFF
_SIGNED = ("int", "s32")


class _Parser:
    """Recursive descent over the token list. Each rule returns (type, code): the CEL
    type of the subexpression and its postfix program, with the 32-bit and signedness
    choices already made (``s32 + s32`` is an add followed by a wrap to 32 bits; ``<`` on
    ``uint`` an unsigned compare)."""

    def __init__(self, text: str, arg_types: list[str | None]) -> None:
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

    def parse(self) -> tuple[str, list[Insn]]:
        t = self.or_()
        if self.i != len(self.toks):
            raise CelError(f"unexpected {self.toks[self.i][1]!r}")
        return t

    def _logic(self, op: str, code: int, sub: Callable[[], tuple[str, list[Insn]]]
               ) -> tuple[str, list[Insn]]:
        t, c = sub()
        while self.peek() == op:
            self.take()
            u, d = sub()
            if not {t, u} <= {"bool", "?"}:
                raise CelError(f"{op} needs booleans, got {t} and {u}")
            t, c = "bool", c + d + [(code, 0, 0)]
        return t, c

    def or_(self) -> tuple[str, list[Insn]]:
        return self._logic("||", OR, self.and_)

    def and_(self) -> tuple[str, list[Insn]]:
        return self._logic("&&", AND, self.eq)

    def eq(self) -> tuple[str, list[Insn]]:
        t, c = self.rel()
        while self.peek() in ("==", "!="):
            op = self.take()[1]
            u, d = self.rel()
            if t != u and "?" not in (t, u):
                raise CelError(f"no matching overload for {t} {op} {u}")
            t, c = "bool", c + d + [(EQ if op == "==" else NE, 0, 0)]
        return t, c

    def rel(self) -> tuple[str, list[Insn]]:
        t, c = self.add()
        while self.peek() in ("<", "<=", ">", ">="):
            op = self.take()[1]
            u, d = self.add()
            if "?" not in (t, u) and (t != u or t not in _INTS):
                raise CelError(f"no matching overload for {t} {op} {u}")
            signed = (t if t != "?" else u) in _SIGNED or "?" == t == u
            less = (LT, LE) if signed else (LTU, LEU)
            code = less[op.endswith("=")]
            swap = [(SWAP, 0, 0)] if op.startswith(">") else []  # a > b is b < a
            t, c = "bool", c + d + swap + [(code, 0, 0)]
        return t, c

    def add(self) -> tuple[str, list[Insn]]:
        t, c = self.unary()
        while self.peek() in ("+", "-"):
            op = self.take()[1]
            u, d = self.unary()
            if "?" not in (t, u) and (t != u or t not in _INTS):
                raise CelError(f"no matching overload for {t} {op} {u}")
            t = u if t == "?" else t
            wrap = [(S32, 0, 0)] if t == "s32" else [(U32, 0, 0)] if t == "u32" else []
            c = c + d + [(ADD if op == "+" else SUB, 0, 0)] + wrap
        return t, c

    def unary(self) -> tuple[str, list[Insn]]:
        if self.peek() == "!":
            self.take()
            t, c = self.unary()
            if t not in ("bool", "?"):
                raise CelError(f"! needs a boolean, got {t}")
            return "bool", c + [(NOT, 0, 0)]
        if self.peek() == "-" and self.i + 1 < len(self.toks) and \
                self.toks[self.i + 1][0] == "num":
            self.take()
            kind, text = self.take()
            if text[-1] in "uU":
                raise CelError(f"-{text}: an unsigned literal cannot be negative")
            v = -int(text, 0)
            if v < -(1 << 63):
                raise CelError(f"-{text} does not fit a 64-bit int")
            return "int", [(CONST, 0, v)]
        return self.primary()

    def primary(self) -> tuple[str, list[Insn]]:
        kind, text = self.take()
        if kind == "num":
            if text[-1] in "uU":
                v = int(text[:-1], 0)
                if v >= 1 << 64:
                    raise CelError(f"{text} does not fit a 64-bit uint")
                return "uint", [(CONST, 0, v - (1 << 64) if v >= 1 << 63 else v)]
            v = int(text, 0)
            if v >= 1 << 63:
                raise CelError(f"{text} does not fit a 64-bit int (write {text}u for a uint)")
            return "int", [(CONST, 0, v)]
        if text == "(":
            r = self.or_()
            self.take(")")
            return r
        if kind == "id":
            if text in ("true", "false"):
                return "bool", [(CONST, 0, int(text == "true"))]
            if text in _CASTS:
                self.take("(")
                t, c = self.or_()
                self.take(")")
                want, out = _CASTS[text]
                if t not in (want, "?"):
                    raise CelError(f"{text}() takes an {want}, got {t}")
                return out, c + [(S32 if out == "s32" else U32, 0, 0)]
            m = re.fullmatch(r"arg([0-9]+)", text)
            if m:
                k = int(m.group(1))
                if k >= len(self.arg_types):
                    raise CelError(f"{text}: the hook has {len(self.arg_types)} args")
                t = self.arg_types[k]
                if t is None:
                    return "?", [(ARG, k, 0)]  # type not known yet (tracepoint auto)
                if t not in _INTS:
                    raise CelError(f"{text} is of type {t}, which CEL expressions "
                                   "cannot use (64- or 32-bit integers only)")
                return t, [(ARG, k, 0)]
            raise CelError(f"undeclared reference to {text!r}")
        raise CelError(f"unexpected {text!r}")


def _cel_types(arg_types: list[ArgType | None]) -> list[str | None]:
    out: list[str | None] = []
    for at in arg_types:
        out.append(None if at is None else _ARG_TYPES.get(at.canonical, at.value))
    return out


def stack_depth(code: list[Insn]) -> int:
    """The most values the program keeps on the stack at once."""
    depth = most = 0
    for op, _a, _v in code:
        if op in (ARG, CONST):
            depth += 1
        elif op not in (S32, U32, NOT, SWAP):
            depth -= 1
        most = max(most, depth)
    return most


def compile_expr(expr: str, arg_types: list[str]) -> list[Insn]:
    """The postfix program of ``expr`` for a hook whose args have these CEL types
    (``int``, ``uint``, ``s32``, ``u32``, or another name for an argument CEL cannot use).
    Raises CelError when it is invalid or not a boolean."""
    t, code = _Parser(expr, list(arg_types)).parse()
    if t != "bool":
        raise CelError(f"the expression is of type {t}, not bool")
    return code


def at_positions(code: list[Insn], positions: list[int]) -> list[Insn]:
    """A program compiled over the types of ``positions`` (a filter's ``args``: its
    ``argK`` is the hook argument at ``positions[K]``, as Tetragon declares them)
    reading those arguments."""
    return [(ARG, positions[a], v) if op == ARG else (op, a, v) for op, a, v in code]


def on_return(code: list[Insn], ret_type: str) -> list[Insn]:
    """A program compiled over ``[ret_type]`` (``arg0`` is the return value, as Tetragon
    declares it for ``matchReturnArgs``) reading the return value instead: each push of
    ``arg0`` becomes a push of :data:`RET`, wrapped to 32 bits for ``s32`` / ``u32`` (the
    kernel hands the return value over as a 64-bit number)."""
    wrap = [(S32, 0, 0)] if ret_type == "s32" else [(U32, 0, 0)] if ret_type == "u32" else []
    out: list[Insn] = []
    for insn in code:
        out += [(ARG, RET, 0), *wrap] if insn[0] == ARG else [insn]
    return out


def check(expr: str, arg_types: list[ArgType | None]) -> str | None:
    """Why ``expr`` is not a valid CelExpr value for a hook whose args have these types
    (None: not known yet), or None when it is."""
    try:
        t, _code = _Parser(expr, _cel_types(arg_types)).parse()
    except CelError as err:
        return f"invalid CEL expression {expr!r}: {err}"
    if t not in ("bool", "?"):
        return f"CEL expression {expr!r} is of type {t}, not bool"
    return None


__all__ = ["RET", "CelError", "Insn", "at_positions", "check", "compile_expr", "on_return",
           "stack_depth"]
