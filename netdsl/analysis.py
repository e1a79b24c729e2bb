"""Analysis for editors: every error of a text, with ranges, and whatever could be built.

`analyse(text, path)` never raises for user errors: it parses, loads the program and
elaborates each network the text defines, collecting each failure as a diagnostic (a
`NetDSLError` whose span has an end), and keeps the graphs it could build.
"""
from __future__ import annotations

import bisect
import copy
import re
from dataclasses import dataclass, field
from functools import lru_cache

from .errors import NameLookupError, NetDSLError, ParseError, Source, Span
from .frontend import ast as A


@dataclass
class Analysis:
    diagnostics: list = field(default_factory=list)     # NetDSLErrors, in source order
    module: A.Module | None = None
    program: object | None = None                       # netdsl.ir.program.Program
    graphs: dict = field(default_factory=dict)          # network name -> Graph (maybe partial)


MAX_ERRORS = 100       # syntax errors reported for one text, at most


def analyse(text: str, path: str | None = None) -> Analysis:
    """Every error of `text` (named `path`; imports resolve beside it), with what could be
    built despite them. Never raises a NetDSLError."""
    from .ir.program import Program
    name = path or "<string>"
    out = Analysis()
    if text.startswith("\ufeff"):      # as the parser does: a space keeps the columns right
        text = " " + text[1:]
    source = Source(name, text)
    try:
        out.module, syntax, broken = parse_recovering(text, name)
    except Exception as exc:       # noqa: BLE001 -- a defect in recovery: the first error only
        from .frontend.parser import parse
        broken, syntax = set(), [exc] if isinstance(exc, NetDSLError) else []
        if not syntax:
            try:
                out.module = parse(text, name)
            except NetDSLError as e:
                syntax = [e]
    out.diagnostics += syntax
    if out.module is not None:
        prog = Program()
        prog.main_source = name
        prog.errors = []
        try:
            prog.add_text(text, name, _base_dir(path), main=True, module=out.module)
        except NetDSLError as e:           # not collected (only the main file's items are)
            prog.errors.append(e)
        out.diagnostics += prog.errors
        out.program = prog
        failed_import = any(hasattr(e, "import_span") for e in prog.errors)
        _elaborate_all(out, syntax, broken, failed_import)
    seen, result = set(), []
    for e in (_located(e, source, out.module) for e in out.diagnostics):
        key = (e.span.line, e.span.col, e.message)
        if key not in seen:
            seen.add(key)
            result.append(e)
    result.sort(key=lambda e: (e.span.line, e.span.col))
    out.diagnostics = result
    return out


def _base_dir(path: str | None):
    from pathlib import Path
    if not path or path == "<string>":
        return Path.cwd()
    try:
        return Path(path).resolve().parent
    except (OSError, ValueError):       # a path the system refuses (a NUL in it, a loop, ...)
        return Path(path).parent


def _elaborate_all(out: Analysis, syntax: list, broken: set, failed_import: bool):
    from .ir.elaborate import Elaborator
    from .passes.size_rules import sizes_that_work
    for net in out.program.main_networks:
        try:
            graph = Elaborator(out.program).network(net)
            out.graphs[net] = graph
            # as `netdsl check` does (in its summary): input-size constraints no size meets
            sizes_that_work(graph)
        except NetDSLError as e:
            partial = getattr(e, "partial_graph", None)
            if partial is not None:
                out.graphs[net] = partial
            if failed_import and isinstance(e, NameLookupError):
                continue        # most likely a name the failed import would have defined
            if not _after_syntax_error(e, out.module, syntax, broken):
                defn = out.program.networks.get(net)
                if defn is not None:    # where this text says it, for an error elsewhere or nowhere
                    e.anchor = Span(defn.span.source, defn.span.line, defn.span.col,
                                    *token_end(defn.span.source, defn.span.line, defn.span.col))
                out.diagnostics.append(e)
        except Exception:     # a compiler bug must not take the editor down; `check` shows it
            pass


def _after_syntax_error(err: NetDSLError, module, syntax: list, broken: set) -> bool:
    """Whether an elaboration error may follow from a syntax error (what recovery dropped):
    it names a definition that did not parse, or happened in a definition with a syntax
    error, at or after that error. Such errors are left out: the syntax error is the one to fix."""
    if not syntax:
        return False
    if isinstance(err, NameLookupError) and any(f"'{b}'" in err.message for b in broken):
        return True
    places = [s for s in [err.span, *(s for _, s in err.trace)] if s is not None]
    if len(syntax) >= MAX_ERRORS:
        # past the cap syntax errors go unreported: any after the last reported one may be the cause
        name, last = syntax[0].span.source.name, max((e.span.line, e.span.col) for e in syntax)
        if any(s.source.name == name and (s.line, s.col) > last for s in places):
            return True
    items = module.items if module else []
    starts = [(item.span.line, item.span.col) for item in items]       # in source order
    errors = sorted((e.span.line, e.span.col) for e in syntax)
    for s in places:
        # the definition the place is in: a syntax error up to the next definition is this
        # one's (one left open ends there); found by bisection (a text may have 1000s of each)
        pos = (s.line, s.col)
        k = bisect.bisect_right(starts, pos) - 1
        if k < 0 or s.source is not items[k].span.source:
            continue
        hi = starts[k + 1] if k + 1 < len(starts) else (float("inf"), 0)
        j = bisect.bisect_left(errors, starts[k])       # its first syntax error, if any
        if j < len(errors) and errors[j] < hi and (pos >= errors[j] or s == items[k].span):
            return True
    return False


# ---- syntax errors, with recovery -------------------------------------------------------

def parse_recovering(text: str, name: str = "<string>", max_errors: int = MAX_ERRORS):
    """(module, errors, broken): the AST of what parsed, every syntax error found (each as
    the parser reports it), and the names of definitions dropped for a syntax error in their
    header. A clean text takes the parser's fast path.

    Recovery works at statements: at an error, the parser drops the statement it was in (back
    to the innermost list of statements: a { } body, a group, or the top level) and skips
    input up to a token that can continue that list and starts a line (or is a '}', ']' or a
    definition keyword), closing brackets left open where that is what lets it continue.
    Definitions are parsed one by one (each from a `network`, `block` or `import` at the start
    of a line to the next), so that one left open does not swallow the next: that is reported
    at the next one's keyword. Literal and nesting errors drop their top-level item.
    The parser's own first error (what `netdsl check` reports) is always among the errors, unless
    an unclosed definition before it is reported instead."""
    from .frontend.parser import parse
    try:
        return parse(text, name), [], set()
    except ParseError as e:
        first = e
    if text.startswith("\ufeff"):      # as the parser does: a space keeps the columns right
        text = " " + text[1:]
    source = Source(name, text)
    starts = [p for p in _definition_starts(text) if p > 0]
    pieces = list(zip([0] + starts, starts + [len(text)]))
    children, errors, broken = [], [], set()
    for a, b in pieces:
        rec = _Recovery(text, source, max(0, max_errors - len(errors)), a, b)
        tree, errs, brk = rec.run()
        errors += errs
        broken |= brk
        children += tree.children if tree is not None else []
        if rec.eof_error is not None and len(errors) < max_errors:   # open up to the next definition
            errors.append(_unclosed_error(rec, source, text, b, first))
    module, more = _to_module(children, source)
    errors += more
    if not any((e.span.line, e.span.col) <= (first.span.line, first.span.col) for e in errors
               if getattr(e, "unclosed", False)) and \
            all((e.span.line, e.span.col) != (first.span.line, first.span.col) for e in errors):
        errors.append(first)
    errors.sort(key=lambda e: (e.span.line, e.span.col))
    return module, errors, broken


def _definition_starts(text: str) -> list:
    """Offsets of the `network`, `block` and `import` keywords at the start of a line (not in a
    string: at the start of a line, only a triple-quoted one can hold them)."""
    starts = [m.start() for m in re.finditer(r"^(?:network|block|import)(?![A-Za-z0-9_])", text, re.M)]
    if not starts or '"""' not in text and "'''" not in text:
        return starts
    inside = [(m.start(), m.end()) for m in _strings_and_comments().finditer(text)
              if m.group().startswith(('"""', "'''"))]
    return [p for p in starts if not any(a < p < b for a, b in inside)]


@lru_cache(maxsize=1)
def _strings_and_comments():
    """The lexer's STRING and COMMENT terminals, as one pattern (scanning finds them in order)."""
    from .frontend.parser import _parser
    lark = _parser()
    return re.compile("|".join(f"(?:{lark.get_terminal(t).pattern.to_regexp()})" for t in ("COMMENT", "STRING")))


def _unclosed_error(rec, source: Source, text: str, at: int, first: ParseError) -> ParseError:
    """A definition that reached the next one unfinished: reported at the next one's keyword
    (with the parser's message when that is where it failed), with the innermost bracket left
    open."""
    line = text.count("\n", 0, at) + 1
    word = re.match(r"\w+", text[at:]).group()
    message = first.message if (first.span.line, first.span.col) == (line, 1) else \
        rec.eof_error.message.replace("unexpected end of file", f"unexpected '{word}'", 1)
    if rec.unclosed:
        tok = rec.unclosed[-1]
        message += f"; the '{tok}' at {tok.line}:{tok.column} is not closed"
    err = ParseError(message, Span(source, line, 1, line, 1 + len(word)))
    err.unclosed = True
    return err


_SYNC_TERMINALS = ("FOR", "NETWORK")      # shifted only where a statement / definition starts
_STARTERS = frozenset({"RBRACE", "RSQB", "NETWORK", "BLOCK", "IMPORT"})
_CLOSERS = (("RBRACE", "}"), ("RSQB", "]"))
_OPENERS = {"LPAR": "RPAR", "LSQB": "RSQB", "LBRACE": "RBRACE"}
_MAX_CLOSE = 20


class _Recovery:
    """Parses text[start:end] (positions in the whole text), recovering from syntax errors."""

    def __init__(self, text: str, source: Source, max_errors: int, start: int = 0, end: int | None = None):
        from lark.utils import TextSlice
        from .frontend.parser import _parser
        self.text, self.source, self.max_errors = text, source, max_errors
        self.end = len(text) if end is None else end
        self.final = self.end == len(text)      # False: the text goes on after this piece
        self.eof_error = None       # the end-of-piece error of a piece that is not final
        self.unclosed: list = []    # the opening brackets left open at the end
        self.lark = _parser()
        self.ip = self.lark.parse_interactive(TextSlice(text, start, self.end), start="start")
        self.state = self.ip.parser_state
        self.thread = self.ip.lexer_thread
        self.lstate = self.thread.state
        self.table = self.state.parse_conf.states
        self.errors: list = []
        self.broken: set = set()
        self.last = None            # the last token fed

    def run(self):
        from lark.exceptions import UnexpectedInput
        state = self.state
        for _ in range(self.end + 2):      # each round resumes at least one token further on
            try:
                for tok in self.thread.lex(state):
                    state.feed_token(tok)
                    self.last = tok
                return state.feed_token(self._end(), True), self.errors, self.broken
            except UnexpectedInput as e:
                self._record(e)     # (beyond max_errors: recovers, but quietly)
                try:
                    tree = self._recover(e)
                except UnexpectedInput:     # should not happen: every step was tried first
                    break
                if tree is not None:
                    return tree, self.errors, self.broken
        return None, self.errors, self.broken

    def _end(self, lstate=None):
        from lark import Token
        last = (lstate or self.lstate).last_token or self.last
        return Token.new_borrow_pos("$END", "", last) if last is not None else Token("$END", "", 0, 1, 1)

    def _record(self, e):
        from lark.parsers.lalr_interactive_parser import InteractiveParser
        from .frontend.parser import _syntax_error
        if getattr(e, "interactive_parser", None) is None:
            e.interactive_parser = InteractiveParser(self.ip.parser, self.state, self.thread)
        err = _syntax_error(e, self.source)
        if not self.final and getattr(getattr(e, "token", None), "type", None) == "$END":
            self.eof_error = err
            return
        if len(self.errors) < self.max_errors and \
                all((x.span.line, x.span.col) != (err.span.line, err.span.col) for x in self.errors):
            self.errors.append(err)

    # -- candidates: the tokens where parsing may resume
    def _candidates(self, e, lstate, bad: list):
        from lark.exceptions import UnexpectedCharacters, UnexpectedToken
        if isinstance(e, UnexpectedToken):
            yield e.token
            if e.token.type == "$END":
                return
        else:
            self._skip_bad_character(lstate)
        root = self.thread.lexer.root_lexer
        while True:
            try:
                yield root.next_token(lstate)
            except EOFError:
                yield self._end(lstate)
                return
            except UnexpectedCharacters as stray:
                bad.append(stray)
                self._skip_bad_character(lstate)

    def _skip_bad_character(self, lstate):
        ctr, text = lstate.line_ctr, self.text
        p = ctr.char_pos
        if p >= self.end:
            return
        if text[p] in "\"'":       # an unterminated string: the rest of its line goes with it
            nl = text.find("\n", p, self.end)
            ctr.feed(text[p:nl if nl >= 0 else self.end])
        else:
            ctr.feed(text[p])

    def _line_start(self, pos: int) -> int:
        return self.text.rfind("\n", 0, pos) + 1

    def _indent(self, pos: int) -> int | None:
        """The indentation of the line of `pos` when only blanks precede `pos` on it, else None."""
        start = self._line_start(pos)
        return None if self.text[start:pos].strip() else pos - start

    def _starts_statement(self, tok) -> bool:
        return tok.type in _STARTERS or tok.type == "$END" or self._indent(tok.start_pos) is not None

    # -- the plan: a stack depth to return to, closers to feed, then the token
    def _recover(self, e):
        """Find where to resume (`_find`) and resume there. An opener the parser refused (the
        '{' of `for i in range(3 {`, or a '{' typed twice) may open brackets that later closers
        close, or be a stray: both readings are tried, and the one that parses further wins."""
        token = getattr(e, "token", None)
        readings = (False, True) if token is not None and token.type in _OPENERS else (False,)
        plans = [p for p in (self._find(e, copy.copy(self.lstate), push) for push in readings) if p]
        if not plans:
            return None
        plan = max(plans, key=self._reach) if len(plans) > 1 else plans[0]
        depth, closers, tok, lstate, bad = plan
        for stray in bad:
            # a stray character in what is skipped anyway: reported unless an error on its
            # line was (a comment that lost its '#' is one error, not one per quote in it)
            if all(x.span.line != stray.line for x in self.errors):
                self._record(stray)
        self.lstate = self.thread.state = lstate
        return self._apply(depth, closers, tok)

    def _find(self, e, lstate, push_refused: bool):
        """(depth, closers, token, lexer state, stray characters) of the first candidate that
        starts a statement outside the brackets the failed statement left open (or that is
        indented no deeper than that statement: the error may be a missing closer), and that
        some enclosing list of statements can take; None if nothing can."""
        top = next(self._sync_depths(), 1)
        dropped = self.state.value_stack[top - 1:]
        opened = [v.type for v in dropped if getattr(v, "type", None) in _OPENERS]
        first = next((v for v in dropped if _start_pos(v) is not None), None)
        start = _start_pos(first) if first is not None else getattr(e, "pos_in_stream", None)
        if start is None:
            start = e.token.start_pos if getattr(e, "token", None) is not None else 0
        head = self.text[self._line_start(start):start]
        indent = len(head) - len(head.lstrip())
        bad: list = []
        for tok in self._candidates(e, lstate, bad):
            if opened and _OPENERS[opened[-1]] == tok.type:     # closes what the statement opened
                opened.pop()
                continue
            at = self._indent(tok.start_pos) if tok.type != "$END" else 0
            allowed = tok.type == "$END" or (at is not None and at <= indent) or \
                (not opened and self._starts_statement(tok))
            if allowed:
                plan = self._plan(tok)
                if plan is not None:
                    return (*plan, tok, lstate, bad)
                if tok.type == "$END":
                    return None
            if tok.type in _OPENERS and (push_refused or tok is not getattr(e, "token", None)):
                opened.append(tok.type)
        return None

    def _reach(self, plan, limit: int = 2000) -> int:
        """How far into the text parsing gets after a plan (its next error's offset)."""
        from lark import Token
        from lark.exceptions import UnexpectedInput
        depth, closers, tok, lstate, _ = plan
        if tok.type == "$END":
            return -1       # nothing resumed
        trial = self._trial(depth)
        try:
            for kind, text in closers:
                trial.feed_token(Token(kind, text))
            trial.feed_token(tok)
            ls = copy.copy(lstate)
            for n, t in enumerate(self.thread.lexer.lex(ls, trial)):
                trial.feed_token(t)
                if n >= limit:
                    return t.end_pos
            trial.feed_token(self._end(ls), True)
            return self.end + 1
        except UnexpectedInput:
            return ls.line_ctr.char_pos if "ls" in locals() else tok.start_pos

    def _sync_depths(self):
        from lark.parsers.lalr_analysis import Shift
        from lark import Token
        stack = self.state.state_stack
        full = self._trial(len(stack))
        top = self.state.value_stack[-1] if self.state.value_stack else None
        if any(self._feeds(full, Token(t, t.lower())) for t in _SYNC_TERMINALS) or _is_list(top):
            yield len(stack)        # a complete statement waits for its lookahead, or a list
                                    # of statements already reduced for the bracket: keep it
        for d in range(len(stack), 0, -1):
            acts = self.table[stack[d - 1]]
            if any(t in acts and acts[t][0] is Shift for t in _SYNC_TERMINALS):
                yield d

    def _trial(self, depth: int):
        conf = copy.copy(self.state.parse_conf)
        conf.callbacks = {}
        trial = self.state.copy(deepcopy_values=False)
        trial.parse_conf = conf
        del trial.state_stack[depth:]
        del trial.value_stack[depth - 1:]
        return trial

    @staticmethod
    def _feeds(trial, tok) -> bool:
        from lark.exceptions import UnexpectedToken
        try:
            probe = trial.copy(deepcopy_values=False)
            probe.feed_token(tok, tok.type == "$END")
            return True
        except UnexpectedToken:
            return False

    def _plan(self, tok):
        from lark import Token
        for depth in self._sync_depths():
            trial = self._trial(depth)
            closers = []
            for _ in range(_MAX_CLOSE):
                if self._feeds(trial, tok):
                    return depth, closers
                # (a closer in the text closes what it can itself: closing more for it would
                # let a '}' meant for a statement end the definition around it)
                closer = None if tok.type in _OPENERS.values() else \
                    next((c for c in _CLOSERS if self._feeds(trial, Token(c[0], c[1]))), None)
                if closer is None:
                    break
                trial.feed_token(Token(*closer))
                closers.append(closer)
            if tok.type in _OPENERS.values():
                return None     # nor may it end a statement list further out
        return None

    def _apply(self, depth: int, closers: list, tok):
        from lark import Token
        state = self.state
        dropped = state.value_stack[depth - 1:]
        for a, b in zip(dropped, dropped[1:]):      # a definition's header that did not parse
            if getattr(a, "type", None) in ("NETWORK", "BLOCK") and getattr(b, "type", None) == "NAME":
                self.broken.add(str(b))
        if tok.type == "$END":
            self.unclosed = [v for v in state.value_stack if getattr(v, "type", None) in _OPENERS]
        del state.state_stack[depth:]
        del state.value_stack[depth - 1:]
        borrow = self.last if self.last is not None else tok
        for kind, text in closers:
            state.feed_token(Token.new_borrow_pos(kind, text, borrow))
        if tok.type == "$END":
            return state.feed_token(tok, True)
        state.feed_token(tok)
        self.last = tok
        return None


def _is_list(value) -> bool:
    """Whether a value on the parser's stack is a list of statements (a group's, or a body's)."""
    data = getattr(value, "data", None)
    return isinstance(data, str) and (data == "_gstmts" or data.startswith(("__body_star_", "__start_star_")))


def _start_pos(value):
    """Where a token or a tree on the parser's stack starts in the text (None: nowhere)."""
    pos = getattr(value, "start_pos", None)
    if pos is None:
        meta = getattr(value, "meta", None)
        pos = None if meta is None or getattr(meta, "empty", True) else meta.start_pos
    return pos


def _to_module(children: list, source: Source):
    """The AST of a recovered parse tree's items; an item whose literals or nesting are refused
    is left out, its error reported."""
    from lark.exceptions import VisitError
    from .frontend.parser import _check_nesting, _lark_transformer
    errors, items = [], []
    for child in children:
        try:
            item = _lark_transformer()(source).transform(child)
            _check_nesting(item)
            items.append(item)
        except VisitError as e:
            if not isinstance(e.orig_exc, NetDSLError):
                raise
            errors.append(e.orig_exc)
        except NetDSLError as e:
            errors.append(e)
    if items:       # as the parser spans a module: from its first item to the end of its last
        span = Span(source, items[0].span.line, items[0].span.col, items[-1].span.end_line,
                    items[-1].span.end_col)
    else:
        span = Span(source, 1, 1, 1, 1)
    return A.Module(span, items), errors


# ---- locations ------------------------------------------------------------------------

_TOKEN = re.compile(r'[A-Za-z_][A-Za-z0-9_]*|[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?|"(?:[^"\\\n]|\\.)*"?'
                    r"|'(?:[^'\\\n]|\\.)*'?|->|\*\*|//|==|!=|<=|>=|\.\.\.|\S")


def token_end(source: Source, line: int, col: int) -> tuple:
    """(end_line, end_col) of the token that starts at line:col (one character when none)."""
    text = source.line(line)
    m = _TOKEN.match(text, col - 1) if 0 < col <= len(text) else None
    return (line, m.end() + 1) if m else (line, col + 1)


def _with_span(err: NetDSLError, span: Span, message: str | None = None) -> NetDSLError:
    new = copy.copy(err)
    new.span = span
    if message is not None:
        new.message = message
        new.args = (message,)
    return new


def _ended(span: Span) -> Span:
    if span.end_line > span.line or (span.end_line == span.line and span.end_col > span.col):
        return span
    end_line, end_col = token_end(span.source, span.line, span.col)
    return Span(span.source, span.line, span.col, end_line, end_col)


def _located(err: NetDSLError, source: Source, module: A.Module | None) -> NetDSLError:
    """The error with a span in this text that has an end."""
    span = err.span
    if span is None:
        anchor = getattr(err, "anchor", None)
        return _with_span(err, anchor or Span(source, 1, 1, *token_end(source, 1, 1)))
    if span.source.name != source.name:
        # inside another file: the innermost instantiation in this text, else the import
        here = next((s for _, s in err.trace if s.source.name == source.name), None)
        if here is None:
            here = getattr(err, "import_span", None) or getattr(err, "anchor", None)
        if here is None and module is not None:
            here = next((i.span for i in module.items if isinstance(i, A.Import)), None)
        message = f"{err.message} (in {span.location()})"
        return _with_span(err, _ended(here) if here else Span(source, 1, 1, *token_end(source, 1, 1)),
                          message)
    if isinstance(err, ParseError) and span.end_line == span.line and span.end_col == span.col + 1:
        span = Span(source, span.line, span.col, *token_end(source, span.line, span.col))  # the whole token
    return _with_span(err, _ended(span)) if _ended(span) is not err.span else err
