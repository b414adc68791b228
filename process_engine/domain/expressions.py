"""Sandboxed expressions on asteval: `${name}` binds a value, dotted access reads dicts.

An expression is checked against a small allowed syntax when it is compiled, so a
definition that tries to leave the sandbox is rejected when it is loaded; so is one
over 4 KiB or nested deeper than 50. At run time it runs in the sandbox of
`sandbox.py`, where every result is bounded (`expression_limits.py`).
"""

from __future__ import annotations

import ast
import keyword
import operator
import re
import threading
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import CodeType
from typing import Any

from process_engine.domain import compiled_expressions as compiled
from process_engine.domain import expression_limits as limits
from process_engine.domain.errors import ExpressionError, LimitExceeded
from process_engine.domain.sandbox import (
    ALLOWED_NODES,
    CONSTANT_NODES,
    CONSTANTS,
    FUNCTIONS,
    REFUSED_NODES,
    SandboxInterpreter,
)

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
_COMPARISONS = {ast.Gt: operator.gt, ast.GtE: operator.ge, ast.Lt: operator.lt, ast.LtE: operator.le,
                ast.Eq: operator.eq, ast.NotEq: operator.ne}
_CONSTANT_INTERPRETERS = threading.local()  # a cache, holding no state between evaluations
# ast.parse prints SyntaxWarnings (`1if x`) on stderr; expressions are parsed under
# their own file name, so that only theirs are silenced (catch_warnings is slow and
# not thread-safe).
_PARSED_AS = "<expression>"
warnings.filterwarnings("ignore", category=SyntaxWarning, module=re.escape(_PARSED_AS))


@dataclass(frozen=True, slots=True)
class Expression:
    """A compiled expression, shared by every instance of a definition."""

    source: str
    names: frozenset[str]
    _tree: ast.expr = field(repr=False, compare=False)
    _value_names: tuple[str, ...] = field(repr=False, compare=False)  # names bound per evaluation
    _aliases: Mapping[str, str] = field(repr=False, compare=False)  # identifier -> variable name
    _functions: Mapping[str, Callable[..., Any]] = field(repr=False, compare=False)
    _code: CodeType | None = field(default=None, repr=False, compare=False)  # compiled_expressions.compile_checked
    _interpreters: threading.local = field(
        default_factory=threading.local, repr=False, compare=False
    )
    # How `_symbols` binds each value name: (name, the variable it stands for, whether it is an ${alias}).
    _binds: tuple[tuple[str, str, bool], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        binds = tuple((name, self._aliases.get(name, name), name in self._aliases) for name in self._value_names)
        object.__setattr__(self, "_binds", binds)

    @property
    def bare_names(self) -> frozenset[str]:
        """The bare names it reads (not functions), each as the variable it stands for: what load-time checks look up."""
        return frozenset(self._aliases.get(name, name) for name in self._value_names)

    def evaluate(
        self,
        variables: Mapping[str, Any],
        message: Mapping[str, Any] | None = None,
        budget: limits.CpuBudget | None = None,
    ) -> Any:
        """Evaluate against process variables and, for trigger conditions, a message.

        Args:
            variables: process variables; bare names and `${name}` resolve here first.
            message: the telemetry message; `message` and its top-level keys become names.
            budget: the CPU budget of the step this evaluation is part of; without
                one, the evaluation gets a budget of its own.

        Returns:
            The plain Python value of the expression.

        Raises:
            LimitExceeded: a result passed a bound or the CPU budget is spent.
            ExpressionError: a name is missing or the expression failed at run time.
        """
        symbols = self._symbols(variables, message)
        interpreter = self._interpreter()
        try:
            if self._code is not None:
                try:
                    return compiled.run(self._code, self._interpreters.names, interpreter, symbols, budget)
                except LimitExceeded:
                    raise
                except Exception:  # the interpreter evaluates it again and says why, in its words
                    pass
            return interpreter.evaluate(self._tree, symbols, self.source, budget)
        except ExpressionError as error:
            reason = self._readable(error)
            raise type(error)(f"expression {self.source!r} failed: {reason}") from None

    def evaluator(self) -> Callable[[Mapping[str, Any], Mapping[str, Any] | None], Any]:
        """`evaluate` (with a budget of its own) bound to this thread's interpreter, for one thread's loop over a batch.

        The same answers and the same errors: what `evaluate` looks up on every call is
        looked up once here; a bound passed is reported as `evaluate` reports it, and
        anything else the code object raises is evaluated again by `evaluate`, which says
        why in its words.
        """
        if self._code is None:
            return self.evaluate
        interpreter = self._interpreter()
        code, names, evaluate, symbols_of = self._code, self._interpreters.names, self.evaluate, self._symbols

        def evaluate_here(variables: Mapping[str, Any], message: Mapping[str, Any] | None = None) -> Any:
            symbols = symbols_of(variables, message)
            interpreter.budget, interpreter.built = None, 0
            try:
                return eval(code, names, symbols)  # noqa: S307 (compiled_expressions: a checked tree, no builtins)
            except LimitExceeded as error:  # what `evaluate` raises for it, without spending the budget again
                raise type(error)(f"expression {self.source!r} failed: {self._readable(error)}") from None
            except Exception:
                return evaluate(variables, message)

        return evaluate_here

    def comparison(self) -> tuple[tuple[str, ...], Callable[[Any, Any], Any], int | float | str] | None:
        """`a.b <op> constant` when that is the whole expression (`fields.temp_c > 25`): the path, operator and constant.

        For a caller that evaluates it with no variables bound (a variable named like the
        path's first step would be read first), follows the path in the message itself and
        evaluates anything irregular with `evaluate`. None for every other shape, and for
        a path that starts at `message`, an aliased `${variable}` or a constant such as `pi`.
        """
        tree = self._tree
        if not (isinstance(tree, ast.Compare) and len(tree.ops) == 1 and type(tree.ops[0]) in _COMPARISONS):
            return None
        constant = tree.comparators[0]
        if not (isinstance(constant, ast.Constant) and type(constant.value) in (int, float, str)):
            return None
        path: list[str] = []
        node = tree.left
        while isinstance(node, ast.Attribute):
            path.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name) or node.id not in self._value_names or node.id in self._aliases:
            return None
        if node.id == "message" or node.id in CONSTANTS:
            return None
        return (node.id, *reversed(path)), _COMPARISONS[type(tree.ops[0])], constant.value

    def _symbols(self, variables: Mapping[str, Any], message: Any) -> dict[str, Any]:
        """Bind only the names this expression reads: variables, then message, then constants."""
        symbols = dict(self._functions)
        keys = message if type(message) is dict or isinstance(message, Mapping) else {}
        for name, variable, aliased in self._binds:
            value = variables.get(variable, _UNBOUND)
            if value is _UNBOUND and not aliased:
                value = _resolve_bare(name, message, keys)
            if value is not _UNBOUND:
                symbols[name] = value
        return symbols

    def _interpreter(self) -> SandboxInterpreter:
        """One interpreter per thread: creating one costs ~25 µs, running one ~4 µs."""
        interpreter = getattr(self._interpreters, "interpreter", None)
        if interpreter is None:
            interpreter = self._interpreters.interpreter = SandboxInterpreter()
            self._interpreters.names = compiled.namespace(interpreter)
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
        ExpressionError: empty, too long or too deeply nested, a syntax error, or
            outside the sandbox.
    """
    if not isinstance(text, str):
        raise ExpressionError(f"an expression must be text, not {type(text).__name__}: {text!r}"[:200])
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > limits.MAX_EXPRESSION_BYTES:
        raise ExpressionError(f"expression is longer than 4 KiB ({size:,} bytes; the limit is {limits.MAX_EXPRESSION_BYTES:,})")
    python_text, aliases, names = _rewrite_references(text)
    tree = _parse(text, python_text)
    reason = _refusal(tree, aliases)
    if reason:
        raise ExpressionError(f"expression {text!r} is refused: {reason}")
    _check_constants(tree, text)
    functions = _bind_functions(tree)
    names_read = (node.id for node in ast.walk(tree) if isinstance(node, ast.Name))
    value_names = tuple(name for name in dict.fromkeys(names_read) if name not in functions)
    return Expression(text, frozenset(names), tree, value_names, aliases, functions, compiled.compile_checked(tree))


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
        module = _parse_module(stripped)
    except SyntaxError as error:
        try:
            module = _parse_module(f"(\n{stripped}\n)")
        except SyntaxError:
            where = f" (line {error.lineno}, column {error.offset})" if error.lineno else ""
            reason = f"{error.msg}{where}"
            raise ExpressionError(f"expression {text!r} has a syntax error: {reason}") from None
    refused = [statement for statement in module.body if not isinstance(statement, ast.Expr)]
    if refused:
        raise ExpressionError(f"expression {text!r} is refused: {_refused_syntax(refused[0])}")
    if len(module.body) != 1:
        raise ExpressionError(f"expression {text!r} must be a single expression")
    if limits.nesting_depth(module.body[0].value) > limits.MAX_NESTING:
        raise ExpressionError(_too_deep(text))
    return ast.fix_missing_locations(module.body[0]).value


def _parse_module(text: str) -> ast.Module:
    """ast.parse, with CPython's own stack limits turned into a clear refusal."""
    try:
        return ast.parse(text, _PARSED_AS)
    except (RecursionError, MemoryError):  # the parser's stack overflowed: far past the limit
        raise ExpressionError(_too_deep(text)) from None


def _too_deep(text: str) -> str:
    return f"expression {text[:80]!r}... is nested deeper than {limits.MAX_NESTING} levels (the limit)"


def _refusal(tree: ast.expr, aliases: Mapping[str, str]) -> str | None:
    """Why the tree leaves the sandbox (refused syntax first), or None."""
    nodes = list(ast.walk(tree))
    refused = [node for node in nodes if not isinstance(node, ALLOWED_NODES)]
    if refused:
        return _refused_syntax(refused[0])
    return next(filter(None, (_node_refusal(node, aliases) for node in nodes)), None)


def _refused_syntax(node: ast.AST) -> str:
    return f"{REFUSED_NODES.get(type(node), type(node).__name__)} is not allowed"


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
    """Evaluate constant arithmetic now, so `9**9**9` or `'a' * 10**9` fail at load time.

    All constant parts run as one tuple: one evaluation, so one budget for them all.
    """
    subtrees = list(_constant_subtrees(tree))
    if not subtrees:
        return
    together = ast.fix_missing_locations(ast.Expression(ast.Tuple(elts=subtrees, ctx=ast.Load()))).body
    try:
        _constant_interpreter().evaluate(together, {}, text)
    except ExpressionError as error:
        raise type(error)(f"expression {text!r} always fails: {error}") from None


def _constant_interpreter() -> SandboxInterpreter:
    """One per thread: creating one costs more than checking most expressions' constants."""
    interpreter = getattr(_CONSTANT_INTERPRETERS, "interpreter", None)
    if interpreter is None:
        interpreter = _CONSTANT_INTERPRETERS.interpreter = SandboxInterpreter()
    return interpreter


def _constant_subtrees(node: ast.AST) -> Any:
    """The largest operator subtrees made only of literals."""
    if isinstance(node, (ast.BinOp, ast.UnaryOp)):
        if all(isinstance(child, CONSTANT_NODES) for child in ast.walk(node)):
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
