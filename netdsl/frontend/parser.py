"""Text -> AST. Syntax errors become located `ParseError`s with a readable message."""
from __future__ import annotations

import inspect
from functools import lru_cache
from typing import TYPE_CHECKING

from ..errors import NetDSLError, ParseError, Source, Span
from ..gc_pause import paused_gc
from . import ast as A
from . import fastparse
from .grammar_path import grammar_file
from .strings import decode_string, unlexed_quote

if TYPE_CHECKING:           # lark is imported only where the reference parser runs
    from lark import Token

# How deeply expressions, groups and statements may nest. The elaborator walks the
# AST recursively; this keeps it far from Python's recursion limit, and reports
# pathological input (thousands of nested brackets, a 10,000-term sum) at its place.
MAX_NESTING = 200


@lru_cache(maxsize=1)
def _parser():
    """The reference parser (lark). Only errors, and a cold table cache, need it: valid specs
    go through `fastparse`, which runs the same LALR tables without importing lark."""
    from lark import Lark
    # lark's own cache of its analysis (0.5 s -> 0.01 s on later runs) goes beside the fast
    # path's tables, in the user's cache directory: lark's default is a pickle in the shared
    # temporary directory, written in place. Lark checks the grammar's hash stored in it.
    return Lark.open(str(grammar_file()), parser="lalr", strict=True, start=["start", "value"],
                     propagate_positions=True, maybe_placeholders=True,
                     cache=fastparse.lark_cache_file() or False)


@lru_cache(maxsize=1)
def _fast_tables():
    """The fast path's tables, or None where they cannot be had (the reference parser then
    does all the work)."""
    try:
        return fastparse.load_tables(grammar_file().read_text(encoding="utf-8"), _parser)
    except fastparse._Fallback:
        return None


# Human names for the grammar's terminals, used in "expected ..." messages.
_TERMINAL_NAMES = {
    "NAME": "a name", "INT": "an integer", "FLOAT": "a number", "STRING": "a string",
    "LPAR": "'('", "RPAR": "')'", "LSQB": "'['", "RSQB": "']'", "LBRACE": "'{'",
    "RBRACE": "'}'", "COMMA": "','", "COLON": "':'", "EQUAL": "'='", "DOT": "'.'",
    "COMP_OP": "a comparison", "ADD_OP": "'+' or '-'", "MUL_OP": "'*', '/', '//' or '%'",
    "MINUS": "'-'", "PLUS": "'+'", "SEMICOLON": "';'", "$END": "end of file",
}


@lru_cache(maxsize=1)
def _anonymous_terminals() -> dict:
    """Lark numbers the terminals it names itself ('->', '**', '...': __ANON_0, ...) in the
    grammar's order; their text comes from the reference parser."""
    return {t.name: f"'{t.pattern.value}'" for t in _parser().terminals if t.name.startswith("__ANON")}


def _terminal_name(t: str) -> str:
    if t in _TERMINAL_NAMES:
        return _TERMINAL_NAMES[t]
    if t.startswith("__ANON"):
        return _anonymous_terminals().get(t, t)
    return f"'{t.lower()}'" if t.isalpha() else t


def _describe_expected(expected) -> str:
    names = sorted({_terminal_name(t) for t in expected})
    if len(names) > 6:
        return ""
    return " (expected " + ", ".join(names[:-1]) + (" or " if len(names) > 1 else "") + names[-1] + ")"


def _describe_token(tok: Token) -> str:
    if tok.type == "$END":
        return "end of file"
    return f"'{tok}'"


def parse(text: str, name: str = "<string>") -> A.Module:
    return _parse(text, name, "start")


def parse_value(text: str, name: str):
    """Parse one expression, e.g. the value of a ``--set key=value`` option."""
    return _parse(text, name, "value")


def _parse(text: str, name: str, start: str):
    with paused_gc():
        return _parse_text(text, name, start)


def _parse_text(text: str, name: str, start: str):
    if text.startswith("\ufeff"):      # a UTF-8 byte order mark; a space keeps the columns right
        text = " " + text[1:]
    source = Source(name, text)
    tables = _fast_tables()
    result = fastparse.parse(tables, text, source, start, _ToAST(source)) if tables else None
    if result is None:      # a syntax or literal error somewhere: lark reports it, as always
        result = _parse_reference(text, source, start)
    _check_nesting(result)
    return result


def _parse_reference(text: str, source: Source, start: str):
    """Parse with lark into a tree, then build the AST from it; every error comes from here."""
    from lark.exceptions import UnexpectedInput, VisitError
    try:
        tree = _parser().parse(text, start=start)
    except UnexpectedInput as e:
        raise _syntax_error(e, source) from None
    try:
        return _lark_transformer()(source).transform(tree)
    except VisitError as e:   # errors raised inside the transformer arrive wrapped
        if isinstance(e.orig_exc, NetDSLError):
            raise e.orig_exc from None
        raise


_LEAVES = (A.Var, A.Lit)        # nodes that hold no other node


@lru_cache(maxsize=None)
def _child_fields(cls) -> tuple:
    """The fields of an AST class that may hold nodes, in definition order (as vars() lists them)."""
    return tuple(f for f in cls._fields if f != "span")


def _check_nesting(root):
    """Reject ASTs nested deeper than MAX_NESTING (iteratively: the tree may be very deep)."""
    stack = [(root, 0)]
    containers = (A.Node, list, tuple)
    while stack:
        node, depth = stack.pop()
        if isinstance(node, A.Node):
            depth += 1
            if depth > MAX_NESTING:
                raise ParseError(f"nested too deeply (more than {MAX_NESTING} levels of expressions, "
                                 "groups and statements); split it up using intermediate names",
                                 node.span)
            children = [getattr(node, f) for f in _child_fields(node.__class__)]
        elif isinstance(node, (list, tuple)):
            children = node
        else:
            continue
        for c in children:
            # a leaf can only matter where it would be too deep itself
            if isinstance(c, containers) and (depth >= MAX_NESTING or not isinstance(c, _LEAVES)):
                stack.append((c, depth))


def _end_position(text: str) -> tuple:
    """Line and column just after the last line with any text on it (1, 1 for a blank text)."""
    lines = text.split("\n")
    while len(lines) > 1 and not lines[-1].strip():
        lines.pop()
    last = lines[-1].rstrip("\r")
    return len(lines), len(last) + 1


def _syntax_error(e, source: Source) -> ParseError:
    from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedToken
    line, col = max(e.line, 1), max(e.column, 1)
    if isinstance(e, UnexpectedCharacters):
        ch = source.text[e.pos_in_stream] if e.pos_in_stream < len(source.text) else "?"
        shown = ch if ch.isprintable() else repr(ch)[1:-1]
        msg = f"unexpected character '{shown}'"
        if ch in "\u201c\u201d\u2018\u2019":
            msg += "; strings use plain quotes (\" or ')"
        elif ch in "\"'":
            msg = unlexed_quote(source.text, e.pos_in_stream)
    elif isinstance(e, UnexpectedEOF):
        line, col = _end_position(source.text)
        msg = "unexpected end of file" + _describe_expected(e.expected)
    else:
        assert isinstance(e, UnexpectedToken)
        tok = e.token
        if tok.type == "$END":
            line, col = _end_position(source.text)
        msg = f"unexpected {_describe_token(tok)}" + _describe_expected(e.accepts or e.expected)
        if tok == "->" and {"RETURN", "INPUT"} & set(e.accepts or e.expected or ()):
            msg += ("; a statement cannot continue with '->': the layer statements of a body already "
                    "form a chain (put each layer on its own), or bind the pipeline: y = x -> A -> B")
        if tok == "->" and {"LPAR", "LBRACE"} <= set(e.accepts or e.expected or ()) \
                and "RETURN" not in set(e.accepts or e.expected or ()):
            msg += ("; a block with named inputs lists its parameters first, even when it has none: "
                    "block B() (x) -> y { ... }")
        if tok.type in ("IF", "ELSE"):
            msg += "; a conditional expression at statement level needs brackets: x = (a if c else b)"
        accepts = set(e.accepts or e.expected or ())
        if tok.type == "LSQB" and "SEMICOLON" in accepts:      # in a group, right after `q = x -> A`
            msg += ("; to start an anonymous group after a statement that ends in an expression, end "
                    "that statement with ';': q = x -> A;")
        elif tok.type == "LSQB" and {"RETURN", "FREEZE"} & accepts:      # a { } body
            msg += ("; an anonymous group [ ... ] stands only inside a group (or a sequential block's "
                    "body); in a { } body name it: g: [ ... ]")
        bracket = _index_on_new_line(e)
        if bracket is not None:     # `m = s[0]` then `[ ... ]` on the next line: read as s[0][...]
            msg = (f"this '[' indexes the expression before it (as in xs[0]), so what follows does not "
                   f"parse ({msg} at {line}:{col}); to start an anonymous group after a statement that "
                   f"ends in an expression, end that statement with ';': m = s[0];")
            line, col = bracket.line, bracket.column
    end = col + 1
    return ParseError(msg, Span(source, line, col, line, end))


# what an index may follow: the trees of expressions (a ?rule over one child leaves no tree)
_EXPRESSION_TREES = frozenset({"var", "int_lit", "float_lit", "str_lit", "true_lit", "false_lit", "list_lit",
                               "tuple_lit", "call", "index", "attr", "pipeline", "cond_expr", "or_op",
                               "and_op", "not_op", "compare", "binop", "pow_op", "neg", "pos"})


def _index_on_new_line(e):
    """The '[' of an index that the parser was inside when it failed, where that '[' starts a
    line below the expression it indexes: most likely an anonymous group written right after
    an assignment (which needs a ';'). None otherwise."""
    try:
        stack = e.interactive_parser.parser_state.value_stack
    except AttributeError:
        return None
    for i in range(len(stack) - 1, 0, -1):
        tok, before = stack[i], stack[i - 1]
        if getattr(tok, "type", None) != "LSQB":
            continue
        meta = getattr(before, "meta", None)
        if getattr(before, "data", None) in _EXPRESSION_TREES and meta is not None \
                and not getattr(meta, "empty", True) and tok.line > meta.end_line:
            return tok
        return None
    return None


def _unquote(tok: Token, source: Source) -> str:
    return decode_string(str(tok), source, tok.line, tok.column)


@lru_cache(maxsize=1)
def _lark_transformer():
    """_ToAST as a lark Transformer over a parse tree (whose nodes carry a `meta`)."""
    from lark import v_args
    from lark.visitors import Transformer_NonRecursive

    def __init__(self, source: Source):
        Transformer_NonRecursive.__init__(self)
        self.source = source
    members = {k: v for k, v in vars(_ToAST).items() if k not in ("__dict__", "__weakref__")}
    return v_args(meta=True)(type("_ToASTTransformer", (Transformer_NonRecursive,),
                                  {**members, "__init__": __init__}))


class _ToAST:
    """The AST builders, one per grammar rule: (span, children) -> AST node. The fast path
    calls them with a Span; the lark transformer (`_lark_transformer`) with a tree's meta."""

    def __init__(self, source: Source):
        self.source = source

    def _span(self, meta) -> Span:
        if meta.__class__ is Span:
            return meta
        if getattr(meta, "empty", True):
            return Span(self.source, 1, 1, 1, 1)
        return Span(self.source, meta.line, meta.column, meta.end_line, meta.end_column)

    def _tspan(self, tok: Token) -> Span:
        return Span(self.source, tok.line, tok.column, tok.end_line, tok.end_column)

    # ---- definitions
    def start(self, meta, items):
        return A.Module(self._span(meta), list(items))

    def value(self, meta, items):
        return items[0]

    def import_stmt(self, meta, c):
        return A.Import(self._span(meta), _unquote(c[0], self.source))

    def param_list(self, meta, c):
        return list(c)

    def param(self, meta, c):
        name, typ, default = c
        return A.Param(self._span(meta), str(name), str(typ) if typ else None, default)

    def name_list(self, meta, c):
        return [str(t) for t in c]

    def io_sig(self, meta, c):
        ins = c[0] or []
        outs = c[1] if isinstance(c[1], list) else [str(c[1])]
        return (ins, outs)

    def body(self, meta, c):
        doc = inspect.cleandoc(_unquote(c[0], self.source)) if c[0] is not None else None
        return (doc, list(c[1:]))

    def block_def(self, meta, c):
        name, params, sig, (doc, body) = c
        ins, outs = sig if sig else (None, None)
        return A.BlockDef(self._span(meta), str(name), params or [], ins, outs, doc, body)

    def seq_block_def(self, meta, c):
        name, params, (doc, body) = c
        return A.SeqBlockDef(self._span(meta), str(name), params or [], None, None, doc, body)

    def seq_body(self, meta, c):
        return self.body(meta, c)

    def gbody(self, meta, c):
        return (None, list(c))

    def network_def(self, meta, c):
        name, params, (doc, body) = c
        return A.NetworkDef(self._span(meta), str(name), params or [], doc, body)

    def block_alias(self, meta, c):
        return A.BlockAlias(self._span(meta), str(c[0]), str(c[1]), c[2] or [])

    def network_alias(self, meta, c):
        return A.NetworkAlias(self._span(meta), str(c[0]), str(c[1]), c[2] or [])

    # ---- statements
    def layer_stmt(self, meta, c):
        if len(c) == 1:
            return A.LayerStmt(self._span(meta), A.Stage(self._span(meta), None, c[0]))
        return A.LayerStmt(self._span(meta), A.Stage(self._span(meta), c[0], c[1]))

    def label(self, meta, c):
        return c[0]

    def anon_group(self, meta, c):
        return A.LayerStmt(self._span(meta), A.Stage(self._span(meta), None, c[0]))

    def splice_stmt(self, meta, c):
        return A.Splice(self._span(meta), c[0])

    def dash(self, meta, c):
        return "-"

    def name_tpl(self, meta, c):
        parts = [str(p) if isinstance(p, str) else p for p in c if p is not None]   # tokens are strs
        return A.NameTemplate(self._span(meta), parts)

    def assign(self, meta, c):
        return A.Assign(self._span(meta), [str(c[0])], c[1])

    def tuple_assign(self, meta, c):
        return A.Assign(self._span(meta), [str(t) for t in c[:-1]], c[-1])

    def if_stmt(self, meta, c):
        cond, (_, body) = c[0], c[1]
        branches = [(cond, body)]
        orelse = None
        for extra in c[2:]:
            if extra is None:
                continue
            if extra[0] == "elif":
                branches.append((extra[1], extra[2]))
            else:
                orelse = extra[1]
        return A.If(self._span(meta), branches, orelse)

    def elif_clause(self, meta, c):
        return ("elif", c[0], c[1][1])

    def else_clause(self, meta, c):
        return ("else", c[0][1])

    def for_stmt(self, meta, c):
        return A.For(self._span(meta), str(c[0]), c[1], c[2][1])

    def return_stmt(self, meta, c):
        return A.Return(self._span(meta), list(c))

    def input_decl(self, meta, c):
        return A.InputDecl(self._span(meta), str(c[0]), str(c[1]), c[2] or [])

    def dim_list(self, meta, c):
        return list(c)

    def output_decl(self, meta, c):
        return A.OutputDecl(self._span(meta), str(c[0]), c[1] if len(c) > 1 else None)

    output_set = output_decl

    def param_decl(self, meta, c):
        return A.ParamDecl(self._span(meta), c[0], str(c[1]), c[2] or [], c[3] if len(c) > 3 else None)

    param_init = param_decl

    def freeze_stmt(self, meta, c):
        return A.Freeze(self._span(meta), list(c))

    def freeze_path(self, meta, c):
        parts, join = [], False
        for t in c:
            if t == "-":            # dash: the next token continues this segment (block1-0)
                parts[-1] += "-"
                join = True
            elif join:
                parts[-1] += str(t)
                join = False
            else:
                parts.append(str(t))
        return A.FreezePath(self._span(meta), parts)

    def callee(self, meta, c):
        return A.Callee(self._span(meta), str(c[0]), c[1])

    def group(self, meta, c):
        return A.Group(self._span(meta), list(c))

    def stage(self, meta, c):
        return A.Stage(self._span(meta), c[0], c[1])

    def arg_list(self, meta, c):
        return [x if isinstance(x, A.Arg) else A.Arg(x.span, None, x) for x in c]

    def kwarg(self, meta, c):
        return A.Arg(self._span(meta), str(c[0]), c[1])

    # ---- expressions
    def pipeline(self, meta, c):
        head, stage = c
        if isinstance(head, A.Pipeline):
            head.stages.append(stage)
            head.span = self._span(meta)
            return head
        return A.Pipeline(self._span(meta), head, [stage])

    def cond_expr(self, meta, c):
        then, cond, orelse = c
        return A.CondExpr(self._span(meta), cond, then, orelse)

    def or_op(self, meta, c):
        return A.BinOp(self._span(meta), "or", c[0], c[1])

    def and_op(self, meta, c):
        return A.BinOp(self._span(meta), "and", c[0], c[1])

    def not_op(self, meta, c):
        return A.UnaryOp(self._span(meta), "not", c[0])

    def compare(self, meta, c):
        return A.BinOp(self._span(meta), str(c[1]), c[0], c[2])

    def binop(self, meta, c):
        return A.BinOp(self._span(meta), str(c[1]), c[0], c[2])

    def pow_op(self, meta, c):
        return A.BinOp(self._span(meta), "**", c[0], c[1])

    def neg(self, meta, c):
        return A.UnaryOp(self._span(meta), "-", c[0])

    def pos(self, meta, c):
        return A.UnaryOp(self._span(meta), "+", c[0])

    def call(self, meta, c):
        return A.Call(self._span(meta), c[0], c[1] or [])

    def index(self, meta, c):
        return A.Index(self._span(meta), c[0], c[1])

    def attr(self, meta, c):
        return A.Attr(self._span(meta), c[0], str(c[1]))

    def var(self, meta, c):
        return A.Var(self._span(meta), str(c[0]))

    def int_lit(self, meta, c):
        text = str(c[0])
        if len(text.lstrip("0")) > 19 or int(text) > 2 ** 63 - 1:
            raise ParseError("integer literal too large (compile-time integers are limited to 64 bits)",
                             self._span(meta))
        return A.Lit(self._span(meta), int(text))

    def float_lit(self, meta, c):
        return A.Lit(self._span(meta), float(c[0]))

    def str_lit(self, meta, c):
        return A.Lit(self._span(meta), _unquote(c[0], self.source))

    def true_lit(self, meta, c):
        return A.Lit(self._span(meta), True)

    def false_lit(self, meta, c):
        return A.Lit(self._span(meta), False)

    def list_lit(self, meta, c):
        return A.ListLit(self._span(meta), [x for x in c if x is not None])

    def tuple_lit(self, meta, c):
        return A.TupleLit(self._span(meta), [x for x in c if x is not None])
