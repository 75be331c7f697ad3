"""Safe evaluation of MONAI bundle config expressions (``"$..."`` strings), without ``eval``/``exec``.

A bundle config may compute a value, e.g. ``"$[1.5, 1.5, 1.5] if @displayable_configs#highres else [3.0, 3.0, 3.0]"``
or ``"$len(@spatial_size)"``. MONAI's `ConfigParser` runs such strings through Python's ``eval``; we parse them
with :mod:`ast` and interpret only a small, pure subset:

* literals (numbers, strings, True/False/None), lists, tuples and dicts;
* arithmetic (``+ - * / // % **``), unary ``- + not``, comparisons, ``and``/``or``, ``a if c else b``;
* indexing (``x[0]``, ``d['key']``, slices) of values computed from the above;
* ``@id`` references (``@a#b#c`` / ``@a::b::c``), resolved by the caller to their (evaluated) config value;
* calls of ``len min max int float round list tuple`` with positional arguments.

``torch.device(...)`` and other expressions that only choose a device return `DEVICE`: the caller drops the key
with a note (napari-medseg's planner chooses the device). Anything else — attribute access, other calls,
lambdas, comprehensions, imports, names — is a `ModelError` naming the key and the expression.
Caller-provided ``calls`` (dotted name -> function of the ``ast.Call`` node and this evaluator) allow a
bundle-specific, narrowly checked call (`napari_medseg.models.bundle` uses it for ``torch.load`` of an
architecture file inside the bundle).
"""

from __future__ import annotations

import ast
import operator
import re
from typing import Any, Callable

from napari_medseg.errors import ModelError

#: MONAI reference syntax inside expressions: @id with "#" (legacy) or "::" separators
REF_RE = re.compile(r"@(\w+(?:(?:#|::)\w+)*)")
DEVICE = type("DeviceExpression", (), {"__repr__": lambda self: "<device expression>"})()
MAX_ITEMS = 100_000  # refuse sequences/repeats/powers beyond this (a config value, not a data set)

_FUNCS: dict[str, Callable] = {"len": len, "min": min, "max": max, "int": int, "float": float, "round": round,
                               "list": list, "tuple": tuple}
_BIN = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
        ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Not: operator.not_}
_CMP = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt,
        ast.GtE: operator.ge, ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b,
        ast.Is: operator.is_, ast.IsNot: operator.is_not}
#: calls that only choose or query a device
_DEVICE_CALLS = {"torch.device", "torch.cuda.is_available", "torch.cuda.device_count", "torch.cuda.current_device"}
#: pure conversions to an array type: the (literal) value is kept as it is
_CONVERSIONS = {"torch.from_numpy", "torch.as_tensor", "torch.tensor", "numpy.array", "np.array", "numpy.asarray",
                "np.asarray"}


def dotted(node: ast.AST) -> str | None:
    """``torch.cuda.is_available`` for the attribute chain node, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id, *reversed(parts)])
    return None


def is_expression(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("$")


class Expression:
    """One ``"$..."`` config string, parsed; `value()` interprets it."""

    def __init__(self, text: str, trail: str, where: str, lookup: Callable[[str, str], Any],
                 calls: dict[str, Callable] | None = None):
        self.text, self.trail, self.where, self.lookup = text, trail, where, lookup
        self.calls = dict(calls or {})
        self.refs: dict[str, str] = {}

        def sub(m):
            name = f"__ref{len(self.refs)}__"
            self.refs[name] = m.group(1)
            return name

        code = REF_RE.sub(sub, text[1:].strip())
        try:
            self.tree = ast.parse(code, mode="eval").body
        except SyntaxError as e:
            raise self.error(f"is not a valid expression ({e.msg})") from e

    def error(self, why: str) -> ModelError:
        return ModelError(
            f"{self.where}: {self.trail} = {self.text[:160]!r} {why}. napari-medseg evaluates only literals, "
            "arithmetic, comparisons, conditionals, @references and len/min/max/int/float/round/list/tuple; "
            "it never runs bundle code. Replace the value by a literal or use a model package"
        )

    # ------------------------------------------------------------------ evaluation
    def only_chooses_device(self) -> bool:
        names = [dotted(n.func) for n in ast.walk(self.tree) if isinstance(n, ast.Call)]
        return bool(names) and "torch.device" in names and all(n in _DEVICE_CALLS for n in names)

    def value(self):
        if self.only_chooses_device():
            return DEVICE
        return self._eval(self.tree)

    def _eval(self, node: ast.AST):  # noqa: C901 - one branch per allowed node type
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [self._eval(e) for e in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.Dict):
            if any(k is None for k in node.keys):
                raise self.error("unpacks a dict (**)")
            return {self._eval(k): self._eval(v) for k, v in zip(node.keys, node.values)}
        if isinstance(node, ast.Name):
            if node.id in self.refs:
                return self.lookup(self.refs[node.id], self.trail)
            raise self.error(f"uses the name {node.id!r}")
        if isinstance(node, ast.BinOp) and type(node.op) in _BIN:
            a, b = self._eval(node.left), self._eval(node.right)
            self._check_size(node.op, a, b)
            return self._apply(_BIN[type(node.op)], a, b)
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            return self._apply(_UNARY[type(node.op)], self._eval(node.operand))
        if isinstance(node, ast.BoolOp):
            result = None
            for v in node.values:
                result = self._eval(v)
                if isinstance(node.op, ast.And) and not result:
                    return result
                if isinstance(node.op, ast.Or) and result:
                    return result
            return result
        if isinstance(node, ast.Compare):
            left = self._eval(node.left)
            for op, comp in zip(node.ops, node.comparators):
                right = self._eval(comp)
                if not self._apply(_CMP[type(op)], left, right):
                    return False
                left = right
            return True
        if isinstance(node, ast.IfExp):
            return self._eval(node.body) if self._eval(node.test) else self._eval(node.orelse)
        if isinstance(node, ast.Subscript):
            base = self._eval(node.value)
            idx = node.slice
            if isinstance(idx, ast.Slice):
                key = slice(*(None if p is None else self._eval(p) for p in (idx.lower, idx.upper, idx.step)))
            else:
                key = self._eval(idx)
            if not isinstance(base, (list, tuple, dict, str)):
                raise self.error(f"indexes a {type(base).__name__}")
            try:
                return base[key]
            except (KeyError, IndexError, TypeError) as e:
                raise self.error(f"cannot be indexed with {key!r} ({type(e).__name__})") from e
        if isinstance(node, ast.Call):
            return self._call(node)
        raise self.error(f"contains {type(node).__name__} code")

    def _call(self, node: ast.Call):
        name = dotted(node.func)
        if name in self.calls:
            return self.calls[name](node, self)
        if name in _CONVERSIONS and len(node.args) == 1 and not node.keywords:
            return self._eval(node.args[0])
        if name in _DEVICE_CALLS:
            return DEVICE
        if name not in _FUNCS:
            what = f"calls {name}()" if name else "calls a computed function"
            if name and name.split(".")[0] == "scripts":
                what += " from the bundle's own scripts/ (bundle code)"
            raise self.error(what)
        if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
            raise self.error(f"passes keyword or * arguments to {name}()")
        args = [self._eval(a) for a in node.args]
        return self._apply(_FUNCS[name], *args)

    def _check_size(self, op, a, b) -> None:
        if isinstance(op, ast.Mult):
            for seq, n in ((a, b), (b, a)):
                if isinstance(seq, (list, tuple, str)) and isinstance(n, int) and len(seq) * max(n, 0) > MAX_ITEMS:
                    raise self.error(f"builds a sequence of more than {MAX_ITEMS} items")
        if isinstance(op, ast.Pow) and isinstance(b, (int, float)) and abs(b) > 64:
            raise self.error("raises to a power above 64")

    def _apply(self, fn, *args):
        if any(a is DEVICE for a in args):
            raise self.error("computes with a device")
        try:
            out = fn(*args)
        except Exception as e:  # noqa: BLE001 - a bad value in the config
            raise self.error(f"fails ({type(e).__name__}: {e})") from e
        if isinstance(out, (list, tuple, str)) and len(out) > MAX_ITEMS:
            raise self.error(f"builds a sequence of more than {MAX_ITEMS} items")
        return out
