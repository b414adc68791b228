"""Sandboxed expressions on asteval: `${name}` binds a value, dotted access reads dicts.

An expression is checked against a small allowed syntax when it is compiled, so a
definition that tries to leave the sandbox is rejected when it is loaded. At run time
asteval only runs expression nodes, attribute access reads dict keys and nothing else,
and the operators that could exhaust memory or CPU (`**`, `*`, `+`, `<<`, `%`) are bounded.
"""

from __future__ import annotations

import ast
import keyword
import math
import operator
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from asteval import Interpreter
from asteval.asteval import ALL_NODES

from process_engine.domain.errors import ExpressionError

MAX_EXPRESSION_LENGTH = 10_000
MAX_TEXT_LENGTH = 65_536
MAX_INTEGER_BITS = 65_536
MAX_EXPONENT = 10_000
MAX_SHIFT = 1_000
MAX_ROUND_DIGITS = 400

_REFERENCE = re.compile(
    r'"(?:\\.|[^"\\\n])*"'  # a "string" literal
    r"|'(?:\\.|[^'\\\n])*'"  # a 'string' literal
    r"|\$\{(?P<reference>[^{}]*)\}"
    r"|(?P<unclosed>\$\{)"
)
_DOTTED_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_ALIAS_PREFIX = "__variable_"
_FUNCTION_PREFIX = "__function_"
_UNBOUND = object()


def _round(number: Any, digits: int | None = None) -> Any:
    """round(), refusing digit counts that make CPython build huge powers of ten."""
    if digits is not None and abs(digits) > MAX_ROUND_DIGITS:
        raise ValueError(f"round() digits must be within ±{MAX_ROUND_DIGITS}")
    return round(number, digits)


def _sum(values: Any, start: Any = 0) -> Any:
    """sum() of numbers only, so it cannot concatenate lists into a huge one."""
    numbers = [start, *values]
    for value in numbers:
        if not isinstance(value, (int, float)):
            raise TypeError(f"sum() adds numbers only, not {type(value).__name__}")
    return sum(numbers)


_round.__name__, _sum.__name__ = "round", "sum"  # as users see them in error messages


_MATH_FUNCTIONS = "ceil floor trunc sqrt exp log log10 log2 isnan isinf isfinite hypot sin cos tan"
FUNCTIONS: Mapping[str, Callable[..., Any]] = {
    "abs": abs, "min": min, "max": max, "round": _round, "len": len, "int": int, "float": float,
    "str": str, "bool": bool, "sum": _sum, "any": any, "all": all, "sorted": sorted,
    **{name: getattr(math, name) for name in _MATH_FUNCTIONS.split()},
}  # fmt: skip
CONSTANTS: Mapping[str, Any] = {"pi": math.pi, "e": math.e, "inf": math.inf, "nan": math.nan}


def _power(base: Any, exponent: Any) -> Any:
    if isinstance(exponent, (int, float)) and exponent > MAX_EXPONENT:
        raise RuntimeError(f"exponent {exponent} is above the limit of {MAX_EXPONENT}")
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0:
        if base.bit_length() * exponent > MAX_INTEGER_BITS:
            raise RuntimeError(f"result of ** is above the limit of {MAX_INTEGER_BITS} bits")
    return base**exponent


def _check_text_length(length: int) -> None:
    if length > MAX_TEXT_LENGTH:
        raise RuntimeError(f"string result is above the limit of {MAX_TEXT_LENGTH} characters")


def _multiply(left: Any, right: Any) -> Any:
    for sequence, count in ((left, right), (right, left)):
        if isinstance(count, int) and isinstance(sequence, (list, tuple, bytes, bytearray)):
            raise TypeError("repeating a list with * is not allowed")
        if isinstance(count, int) and isinstance(sequence, str):
            _check_text_length(len(sequence) * count)
    return left * right


def _add(left: Any, right: Any) -> Any:
    if isinstance(left, str) and isinstance(right, str):
        _check_text_length(len(left) + len(right))
    return left + right


def _modulo(left: Any, right: Any) -> Any:
    if isinstance(left, (str, bytes)):
        raise TypeError("%-formatting of strings is not allowed")
    return left % right


def _shift_left(left: Any, right: Any) -> Any:
    if isinstance(right, int) and right > MAX_SHIFT:
        raise RuntimeError(f"left shift is above the limit of {MAX_SHIFT}")
    return left << right


_BINARY_OPERATORS: Mapping[type, Callable[[Any, Any], Any]] = {
    ast.Add: _add, ast.Sub: operator.sub, ast.Mult: _multiply, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: _modulo, ast.Pow: _power,
    ast.LShift: _shift_left, ast.RShift: operator.rshift, ast.BitAnd: operator.and_,
    ast.BitOr: operator.or_, ast.BitXor: operator.xor,
}  # fmt: skip

# Every other node type (statements, lambda, comprehensions, f-strings...) is refused.
_ALLOWED_NODES = (
    ast.Expr, ast.Compare, ast.BoolOp, ast.BinOp, ast.UnaryOp, ast.IfExp, ast.Subscript,
    ast.Slice, ast.Attribute, ast.Name, ast.Constant, ast.List, ast.Tuple, ast.Dict,
    ast.Set, ast.Call, ast.keyword, ast.Load, ast.boolop, ast.unaryop, ast.cmpop,
    *_BINARY_OPERATORS,
)  # fmt: skip
_REFUSED_NODES: Mapping[type, str] = {
    ast.Import: "import", ast.ImportFrom: "import", ast.FunctionDef: "a function definition (def)",
    ast.ClassDef: "a class definition", ast.Lambda: "lambda", ast.While: "a while loop",
    ast.For: "a for loop", ast.ListComp: "a comprehension", ast.SetComp: "a comprehension",
    ast.DictComp: "a comprehension", ast.GeneratorExp: "a generator expression",
    ast.Assign: "an assignment", ast.AugAssign: "an assignment", ast.NamedExpr: "an assignment",
    ast.JoinedStr: "an f-string", ast.Starred: "* unpacking", ast.MatMult: "@",
    ast.If: "an if statement (use `a if condition else b`)",
}  # fmt: skip
_CONSTANT_NODES = (
    ast.Constant, ast.BinOp, ast.UnaryOp, ast.Tuple, ast.List, ast.Load, ast.operator, ast.unaryop,
)  # fmt: skip
_RUNTIME_NODES = frozenset(
    {"attribute", "binop", "boolop", "call", "compare", "constant", "dict", "expr", "ifexp",
     "index", "list", "name", "set", "slice", "subscript", "tuple", "unaryop"}
)  # fmt: skip


class _SandboxInterpreter(Interpreter):
    """asteval with only expression nodes, bounded operators and dict-only dotted access."""

    def __init__(self) -> None:
        config = {node: node in _RUNTIME_NODES for node in ALL_NODES}
        super().__init__(symtable={}, use_numpy=False, config=config,
                         max_statement_length=MAX_EXPRESSION_LENGTH)  # fmt: skip
        self.symtable = {}
        # asteval's node handlers, by node class rather than by lower-cased class name.
        self._handlers: dict[type, Callable[[Any], Any]] = {}

    def run(self, node: Any, expr: Any = None, lineno: Any = None, with_raise: bool = True) -> Any:
        """asteval's `run`, without the bookkeeping only statements need.

        A checked expression has no statements, so no return value, break or line
        number to track; that bookkeeping cost more than evaluating most expressions.
        Errors go through asteval's `raise_exception` as before.
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
        except Exception:
            if with_raise and self.expr is not None:
                self.raise_exception(node, expr=self.expr)
            raise

    def on_name(self, node: ast.Name) -> Any:
        value = self.symtable.get(node.id, _UNBOUND)
        if value is _UNBOUND:
            self.raise_exception(node, exc=NameError, msg=f"name {node.id!r} is not defined")
        return value

    def on_binop(self, node: ast.BinOp) -> Any:
        operation = _BINARY_OPERATORS[type(node.op)]
        return operation(self.run(node.left), self.run(node.right))

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
            message = f"{ast.unparse(node.value)} has no {what} {key!r}"
            self.raise_exception(node, exc=type(error), msg=message)

    def evaluate(self, tree: ast.expr, symbols: dict[str, Any], source: str) -> Any:
        """Run a checked tree against `symbols`; raise the first error asteval recorded."""
        self.symtable, self.expr = symbols, source
        self.error, self.error_msg, self.retval, self._interrupt = [], None, None, None
        try:
            result = self.run(tree)
        except Exception as error:  # asteval re-raises what it recorded in self.error
            raise ExpressionError(self.failure_text(error)) from None
        finally:
            self.symtable = {}  # keep no reference to the caller's values
        if self.error:
            raise ExpressionError(self.failure_text(None))
        return result

    def failure_text(self, error: Exception | None) -> str:
        """`Type: message` of the innermost recorded error."""
        for holder in self.error:
            if holder.msg:
                name = holder.exc.__name__ if holder.exc else type(error).__name__
                return f"{name}: {holder.msg}"
        return f"{type(error).__name__}: {error}"


@dataclass(frozen=True, slots=True)
class Expression:
    """A compiled expression, shared by every instance of a definition."""

    source: str
    names: frozenset[str]
    _tree: ast.expr = field(repr=False, compare=False)
    _value_names: tuple[str, ...] = field(repr=False, compare=False)  # names bound per evaluation
    _aliases: Mapping[str, str] = field(repr=False, compare=False)  # identifier -> variable name
    _functions: Mapping[str, Callable[..., Any]] = field(repr=False, compare=False)
    _interpreters: threading.local = field(
        default_factory=threading.local, repr=False, compare=False
    )

    def evaluate(
        self, variables: Mapping[str, Any], message: Mapping[str, Any] | None = None
    ) -> Any:
        """Evaluate against process variables and, for trigger conditions, a message.

        Args:
            variables: process variables; bare names and `${name}` resolve here first.
            message: the telemetry message; `message` and its top-level keys become names.

        Returns:
            The plain Python value of the expression.

        Raises:
            ExpressionError: a name is missing or the expression failed at run time.
        """
        symbols = self._symbols(variables, message)
        try:
            return self._interpreter().evaluate(self._tree, symbols, self.source)
        except ExpressionError as error:
            reason = self._readable(error)
            raise ExpressionError(f"expression {self.source!r} failed: {reason}") from None

    def _symbols(self, variables: Mapping[str, Any], message: Any) -> dict[str, Any]:
        """Bind only the names this expression reads: variables, then message, then constants."""
        symbols = dict(self._functions)
        aliases = self._aliases
        keys = message if isinstance(message, Mapping) else {}
        for name in self._value_names:
            value = variables.get(aliases.get(name, name), _UNBOUND)
            if value is _UNBOUND and name not in aliases:
                value = _resolve_bare(name, message, keys)
            if value is not _UNBOUND:
                symbols[name] = value
        return symbols

    def _interpreter(self) -> _SandboxInterpreter:
        """One interpreter per thread: creating one costs ~25 µs, running one ~4 µs."""
        interpreter = getattr(self._interpreters, "interpreter", None)
        if interpreter is None:
            interpreter = self._interpreters.interpreter = _SandboxInterpreter()
        return interpreter

    def _readable(self, error: ExpressionError) -> str:
        """Show internal aliases as the `${name}` the user wrote."""
        text = str(error)
        for alias, variable in self._aliases.items():
            text = text.replace(alias, f"${{{variable}}}")
        return text

    def __reduce__(self) -> tuple[Any, ...]:
        return (compile_expression, (self.source,))


def _resolve_bare(name: str, message: Any, keys: Mapping[str, Any]) -> Any:
    if name == "message" and message is not None:
        return message
    if name in keys:
        return keys[name]
    return CONSTANTS.get(name, _UNBOUND)


def compile_expression(text: str) -> Expression:
    """Check and parse an expression once.

    Args:
        text: the expression; `${name}` refers to a variable and is bound as a value.

    Returns:
        An Expression ready to evaluate many times.

    Raises:
        ExpressionError: empty, too long, a syntax error, or outside the sandbox.
    """
    if not isinstance(text, str):
        raise ExpressionError(f"an expression must be text, not {type(text).__name__}: {text!r}")
    if len(text) > MAX_EXPRESSION_LENGTH:
        raise ExpressionError(f"expression is longer than {MAX_EXPRESSION_LENGTH} characters")
    python_text, aliases, names = _rewrite_references(text)
    tree = _parse(text, python_text)
    reason = _refusal(tree, aliases)
    if reason:
        raise ExpressionError(f"expression {text!r} is refused: {reason}")
    _check_constants(tree, text)
    functions = _bind_functions(tree)
    names_read = (node.id for node in ast.walk(tree) if isinstance(node, ast.Name))
    value_names = tuple(name for name in dict.fromkeys(names_read) if name not in functions)
    return Expression(text, frozenset(names), tree, value_names, aliases, functions)


def _rewrite_references(text: str) -> tuple[str, dict[str, str], set[str]]:
    """Turn each `${name}` into an identifier; return text, aliases and variable names."""
    aliases: dict[str, str] = {}
    names: set[str] = set()

    def replace(match: re.Match[str]) -> str:
        if match["unclosed"]:
            raise ExpressionError(f"expression {text!r} has a `${{` without a closing `}}`")
        if match["reference"] is None:
            if "${" in match[0]:
                raise ExpressionError(
                    f"expression {text!r}: ${{...}} inside quotes is not substituted; "
                    "write the reference outside the quotes, e.g. str(${name})"
                )
            return match[0]
        return _reference(match["reference"].strip(), text, aliases, names)

    return _REFERENCE.sub(replace, text), aliases, names


def _reference(content: str, text: str, aliases: dict[str, str], names: set[str]) -> str:
    """The identifier (or dotted path) that stands for one `${content}`."""
    if not content:
        raise ExpressionError(f"expression {text!r} has an empty ${{}}")
    parts = content.split(".")
    if _DOTTED_PATH.fullmatch(content) and not any(map(keyword.iskeyword, parts)):
        if not parts[0].startswith("__"):
            names.add(parts[0])
            return content
    # Not a plain identifier: bind the whole text as one variable under a safe alias.
    alias = next((key for key, value in aliases.items() if value == content), None)
    alias = alias or f"{_ALIAS_PREFIX}{len(aliases)}"
    aliases[alias] = content
    names.add(content)
    return alias


def _parse(text: str, python_text: str) -> ast.expr:
    """One expression's tree; YAML block text may span lines, so retry inside parentheses."""
    stripped = python_text.strip()
    if not stripped:
        raise ExpressionError("expression is empty")
    try:
        module = ast.parse(stripped)
    except SyntaxError as error:
        try:
            module = ast.parse(f"(\n{stripped}\n)")
        except SyntaxError:
            where = f" (line {error.lineno}, column {error.offset})" if error.lineno else ""
            reason = f"{error.msg}{where}"
            raise ExpressionError(f"expression {text!r} has a syntax error: {reason}") from None
    refused = [statement for statement in module.body if not isinstance(statement, ast.Expr)]
    if refused:
        raise ExpressionError(f"expression {text!r} is refused: {_refused_syntax(refused[0])}")
    if len(module.body) != 1:
        raise ExpressionError(f"expression {text!r} must be a single expression")
    return ast.fix_missing_locations(module.body[0]).value


def _refusal(tree: ast.expr, aliases: Mapping[str, str]) -> str | None:
    """Why the tree leaves the sandbox (refused syntax first), or None."""
    nodes = list(ast.walk(tree))
    refused = [node for node in nodes if not isinstance(node, _ALLOWED_NODES)]
    if refused:
        return _refused_syntax(refused[0])
    return next(filter(None, (_node_refusal(node, aliases) for node in nodes)), None)


def _refused_syntax(node: ast.AST) -> str:
    return f"{_REFUSED_NODES.get(type(node), type(node).__name__)} is not allowed"


def _node_refusal(node: ast.AST, aliases: Mapping[str, str]) -> str | None:
    if isinstance(node, ast.Name) and node.id.startswith("__") and node.id not in aliases:
        return f"name {node.id!r} is not allowed (no names starting with __)"
    if isinstance(node, ast.Attribute) and node.attr.startswith("__"):
        return f"attribute {node.attr!r} is not allowed (no attributes starting with __)"
    if (isinstance(node, ast.Dict) and None in node.keys) or getattr(node, "arg", 0) is None:
        return "** unpacking is not allowed"
    if isinstance(node, ast.Call):
        return _call_refusal(node)
    return None


def _call_refusal(node: ast.Call) -> str | None:
    function = node.func
    if isinstance(function, ast.Attribute):
        return f"calling methods such as .{function.attr}() is not allowed"
    if not isinstance(function, ast.Name):
        return "only named functions can be called"
    if function.id not in FUNCTIONS:
        return f"function {function.id}() is not allowed; allowed: {', '.join(sorted(FUNCTIONS))}"
    return None


def _check_constants(tree: ast.expr, text: str) -> None:
    """Evaluate constant arithmetic now, so `9**9**9` or `'a' * 10**9` fail at load time."""
    subtrees = list(_constant_subtrees(tree))
    interpreter = _SandboxInterpreter() if subtrees else None
    for subtree in subtrees:
        try:
            interpreter.evaluate(subtree, {}, text)
        except ExpressionError as error:
            raise ExpressionError(f"expression {text!r} always fails: {error}") from None


def _constant_subtrees(node: ast.AST) -> Any:
    """The largest operator subtrees made only of literals."""
    if isinstance(node, (ast.BinOp, ast.UnaryOp)):
        if all(isinstance(child, _CONSTANT_NODES) for child in ast.walk(node)):
            yield node
            return
    for child in ast.iter_child_nodes(node):
        yield from _constant_subtrees(child)


def _bind_functions(tree: ast.expr) -> dict[str, Callable[..., Any]]:
    """Rename called functions apart, so a variable named like one never shadows it."""
    functions: dict[str, Callable[..., Any]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            internal = f"{_FUNCTION_PREFIX}{node.func.id}"
            functions[internal] = FUNCTIONS[node.func.id]
            node.func = ast.copy_location(ast.Name(id=internal, ctx=ast.Load()), node.func)
    return functions
