"""Checked expressions compiled to Python code objects, for the path where nothing goes wrong.

asteval stays the parser and the checker (expressions.py refuses anything outside the
sandbox at load time) and the interpreter of record: its tree walk costs about 4 µs
for `fields.temp > 25`, which at telemetry rates is most of what a message costs. The
checked tree is rewritten so every operation the sandbox bounds goes through the same
checks (`SandboxInterpreter.checked`, `weigh` and the bounded operators of sandbox.py),
attribute access reads dict keys only, and names resolve in the evaluation's symbols
alone (no builtins); then it is compiled once.

Only a successful evaluation is taken from the code object. When it raises anything
but a bound (LimitExceeded), the expression is evaluated again by the interpreter,
which gives the error in its own words: expressions have no side effects, so the
second run sees what the first saw.
"""

from __future__ import annotations

import ast
import copy
import operator
from collections.abc import Mapping
from types import CodeType
from typing import Any

from process_engine.domain import expression_limits as limits
from process_engine.domain.sandbox import BINARY_OPERATORS, SandboxInterpreter

_PREFIX = "__pe_"  # user names may not start with __, so these cannot be reached or shadowed
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg, ast.Not: operator.not_, ast.Invert: operator.invert}
_SIZED = limits.SIZED_TYPES


def _call(name: str, *args: ast.expr, keywords: list[ast.keyword] | None = None) -> ast.Call:
    return ast.Call(func=ast.Name(id=_PREFIX + name, ctx=ast.Load()), args=list(args), keywords=keywords or [])


class _Rewrite(ast.NodeTransformer):
    """Route each bounded operation of a checked tree through its check."""

    def visit_BinOp(self, node: ast.BinOp) -> ast.AST:
        self.generic_visit(node)
        return _call("checked", _call(f"binary_{type(node.op).__name__}", node.left, node.right))

    def visit_UnaryOp(self, node: ast.UnaryOp) -> ast.AST:
        self.generic_visit(node)
        return _call("checked", _call(f"unary_{type(node.op).__name__}", node.operand))

    def visit_Compare(self, node: ast.Compare) -> ast.AST:
        self.generic_visit(node)
        node.comparators = [c if isinstance(c, ast.Constant) else _call("weighed", c) for c in node.comparators]
        return node

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        return _call("call", node.func, *node.args, keywords=node.keywords)

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        self.generic_visit(node)
        return _call("field", node.value, ast.Constant(node.attr))


def compile_checked(tree: ast.expr) -> CodeType:
    """The code object of a tree that expressions.py has checked (and renamed functions in)."""
    rewritten = _Rewrite().visit(ast.Expression(body=copy.deepcopy(tree)))
    return compile(ast.fix_missing_locations(rewritten), "<expression>", "eval")


def _field(container: Any, name: str) -> Any:
    """`a.b`: a key of a mapping, nothing else (no Python attribute is ever read)."""
    if type(container) is dict or isinstance(container, Mapping):
        return container[name]  # a missing key raises: the interpreter then says which
    raise LookupError(name)


def namespace(interpreter: SandboxInterpreter) -> dict[str, Any]:
    """The globals a compiled expression runs with, bound to one thread's interpreter and its budget."""
    checked = interpreter.checked
    weigh = interpreter.weigh

    def weighed(value: Any) -> Any:
        if type(value) in _SIZED:
            weigh(value)
        return value

    def call(function: Any, *arguments: Any, **keywords: Any) -> Any:
        for value in arguments:
            if type(value) in _SIZED:
                weigh(value)
        return checked(function(*arguments, **keywords))

    names: dict[str, Any] = {"__builtins__": {}}
    names.update({f"{_PREFIX}binary_{op.__name__}": function for op, function in BINARY_OPERATORS.items()})
    names.update({f"{_PREFIX}unary_{op.__name__}": function for op, function in _UNARY.items()})
    names.update({f"{_PREFIX}checked": checked, f"{_PREFIX}weighed": weighed, f"{_PREFIX}call": call, f"{_PREFIX}field": _field})
    return names


def run(code: CodeType, names: dict[str, Any], interpreter: SandboxInterpreter, symbols: dict[str, Any],
        budget: limits.CpuBudget | None) -> Any:  # fmt: skip
    """Evaluate `code` against `symbols`, counting against `budget` as the interpreter would."""
    interpreter.budget, interpreter.built = budget, 0
    try:
        return eval(code, names, symbols)  # noqa: S307 (a checked tree, no builtins: see the module docstring)
    finally:
        interpreter.budget = None
