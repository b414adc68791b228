"""The asteval sandbox expressions run in: allowed syntax, bounded operators and functions.

asteval runs only expression nodes here; attribute access reads dict keys and
nothing else. Every operator and function result is checked against the bounds of
expression_limits, and operands that would make a huge result (`*`, `**`, `<<`,
`+` of sequences) are refused before the work is done.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Mapping
from typing import Any

from asteval import Interpreter
from asteval.asteval import ALL_NODES, op2func

from process_engine.domain import expression_limits as limits
from process_engine.domain.errors import ExpressionError, LimitExceeded

# Operations between two reads of the CPU clock (a read costs about 1 µs). Names and
# literals are not counted: 4 KiB of text holds too few of them to take long; an
# operation on a big value counts one more for every 1,024 characters or items.
CHECK_EVERY = 64
_UNBOUND = object()
_SIZED = limits.SIZED_TYPES
_REPEATABLE = (list, tuple, bytes, bytearray)
_MAX_PRODUCT_BITS = limits.MAX_INTEGER_BITS + 1  # a product has at least bits(a) + bits(b) - 1 bits


def _round(number: Any, digits: int | None = None) -> Any:
    """round(), refusing digit counts that make CPython build huge powers of ten."""
    if digits is not None and abs(digits) > limits.MAX_ROUND_DIGITS:
        raise ValueError(f"round() digits must be within ±{limits.MAX_ROUND_DIGITS}")
    return round(number, digits)


def _sum(values: Any, start: Any = 0) -> Any:
    """sum() of numbers only, so it cannot concatenate lists into a huge one."""
    if isinstance(values, (str, bytes)):
        raise TypeError("sum() adds numbers only, not the characters of a string")
    numbers = [start, *values]
    for value in numbers:
        if not isinstance(value, (int, float)):
            raise TypeError(f"sum() adds numbers only, not {type(value).__name__}")
    return sum(numbers)


def _str(value: Any = "") -> str:
    """str(), refusing containers whose text would pass the string limit before building it."""
    if type(value) in limits.CONTAINER_TYPES:
        limits.check_size(str, limits.text_size(value), "str()")
    return str(value)


def _sorted(values: Any, **options: Any) -> list[Any]:
    """sorted(), refusing inputs with more items than a list may hold."""
    if hasattr(values, "__len__"):
        limits.check_size(list, len(values), "sorted()")
    return sorted(values, **options)


for _function, _name in ((_round, "round"), (_sum, "sum"), (_str, "str"), (_sorted, "sorted")):
    _function.__name__ = _name  # as users see them in error messages

_MATH_FUNCTIONS = "ceil floor trunc sqrt exp log log10 log2 isnan isinf isfinite hypot sin cos tan"
FUNCTIONS: Mapping[str, Callable[..., Any]] = {
    "abs": abs, "min": min, "max": max, "round": _round, "len": len, "int": int, "float": float,
    "str": _str, "bool": bool, "sum": _sum, "any": any, "all": all, "sorted": _sorted,
    **{name: getattr(math, name) for name in _MATH_FUNCTIONS.split()},
}  # fmt: skip
CONSTANTS: Mapping[str, Any] = {"pi": math.pi, "e": math.e, "inf": math.inf, "nan": math.nan}


def _power(base: Any, exponent: Any) -> Any:
    if isinstance(exponent, (int, float)) and exponent > limits.MAX_EXPONENT:
        raise LimitExceeded(f"exponent {exponent} is above the limit of {limits.MAX_EXPONENT}")
    if type(base) is int and type(exponent) is int and exponent > 0:
        # Within a factor of two of the result's bits: refused before any work is done.
        limits.check_bits((abs(base).bit_length() - 1) * exponent, "**")
    return base**exponent


def _multiply(left: Any, right: Any) -> Any:
    if type(left) is int and type(right) is int:
        if left.bit_length() + right.bit_length() > _MAX_PRODUCT_BITS:
            limits.check_bits(left.bit_length() + right.bit_length() - 1, "*")
        return left * right
    for sequence, count in ((left, right), (right, left)):
        if isinstance(count, int) and isinstance(sequence, _REPEATABLE):
            raise TypeError("repeating a list with * is not allowed")
        if isinstance(count, int) and isinstance(sequence, str):
            limits.check_size(str, len(sequence) * count, "*")
    return left * right


def _add(left: Any, right: Any) -> Any:
    kind = type(left)
    if kind is type(right) and kind in _SIZED and kind is not dict:
        limits.check_size(kind, len(left) + len(right), "+")
    return left + right


def _modulo(left: Any, right: Any) -> Any:
    if isinstance(left, (str, bytes)):
        raise TypeError("%-formatting of strings is not allowed")
    return left % right


def _shift_left(left: Any, right: Any) -> Any:
    if type(left) is int and type(right) is int and right > 0:
        limits.check_bits(left.bit_length() + right, "left shift")
    return left << right


BINARY_OPERATORS: Mapping[type, Callable[[Any, Any], Any]] = {
    ast.Add: _add, ast.Sub: operator.sub, ast.Mult: _multiply, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: _modulo, ast.Pow: _power,
    ast.LShift: _shift_left, ast.RShift: operator.rshift, ast.BitAnd: operator.and_,
    ast.BitOr: operator.or_, ast.BitXor: operator.xor,
}  # fmt: skip

# Every other node type (statements, lambda, comprehensions, f-strings...) is refused.
ALLOWED_NODES = (
    ast.Expr, ast.Compare, ast.BoolOp, ast.BinOp, ast.UnaryOp, ast.IfExp, ast.Subscript,
    ast.Slice, ast.Attribute, ast.Name, ast.Constant, ast.List, ast.Tuple, ast.Dict,
    ast.Set, ast.Call, ast.keyword, ast.Load, ast.boolop, ast.unaryop, ast.cmpop,
    *BINARY_OPERATORS,
)  # fmt: skip
REFUSED_NODES: Mapping[type, str] = {
    ast.Import: "import", ast.ImportFrom: "import", ast.FunctionDef: "a function definition (def)",
    ast.ClassDef: "a class definition", ast.Lambda: "lambda", ast.While: "a while loop",
    ast.For: "a for loop", ast.ListComp: "a comprehension", ast.SetComp: "a comprehension",
    ast.DictComp: "a comprehension", ast.GeneratorExp: "a generator expression",
    ast.Assign: "an assignment", ast.AugAssign: "an assignment", ast.NamedExpr: "an assignment",
    ast.JoinedStr: "an f-string", ast.Starred: "* unpacking", ast.MatMult: "@",
    ast.If: "an if statement (use `a if condition else b`)",
}  # fmt: skip
CONSTANT_NODES = (
    ast.Constant, ast.BinOp, ast.UnaryOp, ast.Tuple, ast.List, ast.Load, ast.operator, ast.unaryop,
)  # fmt: skip
_RUNTIME_NODES = frozenset(
    {"attribute", "binop", "boolop", "call", "compare", "constant", "dict", "expr", "ifexp",
     "index", "list", "name", "set", "slice", "subscript", "tuple", "unaryop"}
)  # fmt: skip


class SandboxInterpreter(Interpreter):
    """asteval with only expression nodes, bounded results and dict-only dotted access."""

    def __init__(self) -> None:
        config = {node: node in _RUNTIME_NODES for node in ALL_NODES}
        super().__init__(symtable={}, use_numpy=False, config=config,
                         max_statement_length=limits.MAX_EXPRESSION_BYTES)  # fmt: skip
        self.symtable = {}
        # asteval's node handlers, by node class rather than by lower-cased class name.
        self._handlers: dict[type, Callable[[Any], Any]] = {}
        self.ticks = CHECK_EVERY  # kept across evaluations, so short ones rarely read the clock
        self.budget: limits.CpuBudget | None = None
        self.built = 0

    def run(self, node: Any, expr: Any = None, lineno: Any = None, with_raise: bool = True) -> Any:
        """asteval's `run`, without the bookkeeping only statements need, and with the CPU check.

        A checked expression has no statements, so no return value, break or line
        number to track; that bookkeeping cost more than evaluating most expressions.
        Errors go through asteval's `raise_exception` as before; a bound passed
        goes straight up as LimitExceeded.
        """
        if node is None:
            return None
        handler = self._handlers.get(node.__class__)
        if handler is None:
            if isinstance(node, str) or node.__class__.__name__.lower() not in self.node_handlers:
                return super().run(node, expr, lineno, with_raise)  # asteval's own errors
            handler = self._handlers[node.__class__] = self.node_handlers[node.__class__.__name__.lower()]
        try:
            return handler(node)
        except LimitExceeded:
            raise
        except Exception:
            if with_raise and self.expr is not None:
                self.raise_exception(node, expr=self.expr)
            raise

    def tick(self) -> None:
        """Read the CPU clock against this evaluation's budget (a fresh one when none was given)."""
        self.ticks = CHECK_EVERY
        if self.budget is None:
            self.budget = limits.CpuBudget()
        self.budget.check()

    def checked(self, value: Any) -> Any:
        """An operation's result, refused past a bound, counted against the CPU and build budgets."""
        kind = type(value)
        self.ticks -= 1
        if kind is int:
            if value.bit_length() > limits.MAX_INTEGER_BITS:
                limits.check_bits(value.bit_length(), "an operation")
        elif kind in _SIZED:
            size = len(value)
            self.built += limits.check_size(kind, size, "an operation")
            self.ticks -= size >> 10
            if self.built > limits.MAX_BUILT_PER_EVALUATION:
                limit = limits.MAX_BUILT_PER_EVALUATION // (1024 * 1024)
                raise LimitExceeded(f"the expression built more than {limit} MiB of strings and lists in all")
        if self.ticks <= 0:
            self.tick()
        return value

    def weigh(self, value: Any) -> None:
        """Count an operand that a comparison or function walks through item by item."""
        self.ticks -= 1 + (len(value) >> 10 if type(value) in _SIZED else 0)
        if self.ticks <= 0:
            self.tick()

    def on_name(self, node: ast.Name) -> Any:
        value = self.symtable.get(node.id, _UNBOUND)
        if value is _UNBOUND:
            self.raise_exception(node, exc=NameError, msg=f"name {node.id!r} is not defined")
        return value

    def on_binop(self, node: ast.BinOp) -> Any:
        operation = BINARY_OPERATORS[type(node.op)]
        return self.checked(operation(self.run(node.left), self.run(node.right)))

    def on_unaryop(self, node: ast.UnaryOp) -> Any:
        return self.checked(op2func(node.op)(self.run(node.operand)))

    def on_compare(self, node: ast.Compare) -> Any:
        left, result = self.run(node.left), True
        for comparison, right_node in zip(node.ops, node.comparators):
            right = self.run(right_node)
            if type(right) in _SIZED:
                self.weigh(right)
            result = op2func(comparison)(left, right)
            if not result:
                return result
            left = right
        return result

    def on_call(self, node: ast.Call) -> Any:
        function = self.run(node.func)
        arguments = [self.run(argument) for argument in node.args]
        keywords = {keyword.arg: self.run(keyword.value) for keyword in node.keywords} if node.keywords else {}
        for value in arguments:
            if type(value) in _SIZED:
                self.weigh(value)
        try:
            result = function(*arguments, **keywords)
        except LimitExceeded:
            raise
        except Exception as error:
            name = getattr(function, "__name__", "function")
            self.raise_exception(node, exc=type(error), msg=f"{name}(): {error}")
        return self.checked(result)

    def on_attribute(self, node: ast.Attribute) -> Any:
        container = self.run(node.value)
        if not isinstance(container, Mapping):
            kind = type(container).__name__
            message = f"{ast.unparse(node.value)} has no fields: it is of type {kind}"
            self.raise_exception(node, exc=AttributeError, msg=message)
        if node.attr not in container:
            message = f"{ast.unparse(node.value)} has no key {node.attr!r}"
            self.raise_exception(node, exc=KeyError, msg=message)
        return container[node.attr]

    def on_subscript(self, node: ast.Subscript) -> Any:
        container, key = self.run(node.value), self.run(node.slice)
        try:
            return container[key]
        except (KeyError, IndexError) as error:
            what = "key" if isinstance(error, KeyError) else "index"
            message = f"{ast.unparse(node.value)} has no {what} {_short(repr(key))}"
            self.raise_exception(node, exc=type(error), msg=message)

    def evaluate(self, tree: ast.expr, symbols: dict[str, Any], source: str,
                 budget: limits.CpuBudget | None = None) -> Any:  # fmt: skip
        """Run a checked tree against `symbols`; raise the first error asteval recorded."""
        self.symtable, self.expr, self.budget, self.built = symbols, source, budget, 0
        self.error, self.error_msg, self.retval, self._interrupt = [], None, None, None
        try:
            result = self.run(tree)
        except LimitExceeded:
            raise
        except Exception as error:  # asteval re-raises what it recorded in self.error
            raise ExpressionError(self.failure_text(error)) from None
        finally:
            self.symtable, self.budget = {}, None  # keep no reference to the caller's values
        if self.error:
            raise ExpressionError(self.failure_text(None))
        return result

    def failure_text(self, error: Exception | None) -> str:
        """`Type: message` of the innermost recorded error, cut short (it may quote a value)."""
        for holder in self.error:
            if holder.msg:
                name = holder.exc.__name__ if holder.exc else type(error).__name__
                return _short(f"{name}: {holder.msg}")
        return _short(f"{type(error).__name__}: {error}")


def _short(text: str, length: int = 300) -> str:
    return text if len(text) <= length else f"{text[:length]}... ({len(text):,} characters)"
