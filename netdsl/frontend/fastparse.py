"""The parser's fast path: the grammar's LALR(1) automaton, run without building a parse tree.

Lark (the reference parser, `parser.py`) builds a parse tree with positions, which a
Transformer then turns into the AST; for a 10,000-layer spec that was most of `netdsl check`.
This module runs the same automaton and the same contextual lexer, from tables taken out of
Lark once and cached on disk, and calls the AST builders at each reduction with the spans
Lark's ``propagate_positions`` gives. It never imports lark when the cache is warm.

It only ever handles input that parses cleanly: at a syntax error, or when a builder rejects
something (a bad string literal), `parse` returns None and the caller runs the Lark path,
which produces every error message. `tests/test_fastparse.py` checks that both paths give
the same AST, spans included.

The cache file (`parser-<checksum>.marshal`, keyed by the grammar text and this module's
source) lives in $NETDSL_CACHE_DIR, else $XDG_CACHE_HOME/netdsl, else ~/.cache/netdsl. It is
written atomically (a temporary file renamed into place); where it cannot be written (a
read-only home) the tables are rebuilt in memory on each run, which costs about 0.1 s (0.5 s
more when lark's own cache, `lark-<checksum>.pickle` in the same directory, is missing too).
"""
from __future__ import annotations

import marshal
import os
import re
import zlib
from pathlib import Path

from ..errors import NetDSLError, Span

FORMAT = 1          # bump when the table layout or the emulated semantics change

# rule kinds
_BUILD, _SPLICE, _UNIT = 0, 1, 2    # an AST builder; an inlined _rule; a ?rule over one symbol


class Tok(str):
    """A token: its text, with the attributes of a lark Token that the AST builders use.
    Only tokens of _POSITIONED types are made Toks (the builders decode strings with their
    positions); the others are handed over as plain strs, which is all the builders use."""
    __slots__ = ("type", "line", "column", "end_line", "end_column")


_POSITIONED = frozenset({"STRING"})


def _span(source, line: int, col: int, end_line: int, end_col: int, _new=object.__new__,
          _set=object.__setattr__) -> Span:
    """Span(source, line, col, end_line, end_col), built without the frozen dataclass's five
    guarded setattrs: the fast path makes one per AST node."""
    span = _new(Span)
    _set(span, "__dict__", {"source": source, "line": line, "col": col, "end_line": end_line,
                            "end_col": end_col})
    return span


class _Fallback(Exception):
    """The input needs the reference parser (a syntax error, or a construct not handled here)."""


# ---- tables ------------------------------------------------------------------------------

def cache_dir() -> Path:
    explicit = os.environ.get("NETDSL_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "netdsl"


def _own_source() -> str:
    """This module's text: the tables' layout and meaning are defined here."""
    try:
        return Path(__file__).read_text(encoding="utf-8")
    except OSError:
        return ""


_OWN_SOURCE = _own_source()     # read once, as the code running now was loaded


def _identity(grammar_text: str) -> str:
    """What the tables depend on; stored in the cache file and compared in full on loading."""
    return f"{FORMAT}\0{marshal.version}\0{_OWN_SOURCE}\0{grammar_text}"


def cache_path(grammar_text: str) -> Path:
    ident = _identity(grammar_text).encode()
    # a checksum names the file (hashlib's import alone costs more than parsing a spec);
    # the full identity inside it is what decides
    return cache_dir() / f"parser-{_checksum(ident)}.marshal"


def load_tables(grammar_text: str, lark_parser) -> "Tables":
    """The tables for this grammar: from the cache file, else extracted from `lark_parser()`
    (a callable giving the reference Lark parser) and written to the cache."""
    path = cache_path(grammar_text)
    try:
        data = marshal.loads(path.read_bytes())
        if isinstance(data, dict) and data.get("identity") == _identity(grammar_text):
            return Tables(data)
    except (OSError, ValueError, EOFError, TypeError, KeyError, re.error):
        pass                    # missing, or not what this code writes: rebuild it
    data = _plain(extract_tables(lark_parser()))
    data["identity"] = _identity(grammar_text)
    try:
        payload = marshal.dumps(data)
    except ValueError:      # something not plain data: use the tables, do not cache them
        payload = None
    if payload is not None:
        _write_atomic(path, payload)
    return Tables(data)


def _plain(x):
    """x with lark's str subclasses (a freshly built grammar names things with Tokens) made
    plain strs, so that marshal takes it."""
    if isinstance(x, str):
        return str(x)
    if isinstance(x, dict):
        return {_plain(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_plain(v) for v in x)
    return x


def lark_cache_file() -> str | None:
    """Where lark may keep its own cache (see parser._parser), or None where the cache
    directory cannot be written."""
    directory = cache_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    if not os.access(directory, os.W_OK):
        return None
    return str(directory / f"lark-{_checksum(_OWN_SOURCE.encode())}.pickle")


def _checksum(data: bytes) -> str:
    return f"{zlib.crc32(data):08x}{zlib.adler32(data):08x}"


def _write_atomic(path: Path, payload: bytes) -> None:
    """Write the cache file with the project's one writer (atomic, and no temporary file left
    behind for long: the next write removes one a killed process left)."""
    from ..output import write_outputs
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_outputs([(path, lambda f: f.write(payload))], require_regular=True)
    except (OSError, NetDSLError):
        pass                # a read-only or missing cache directory: keep the tables in memory


def extract_tables(lark) -> dict:
    """Plain-data tables (marshal-able) from a Lark LALR parser built with the contextual
    lexer, propagate_positions and maybe_placeholders. Raises _Fallback for a grammar
    feature this module does not emulate."""
    from lark.lexer import _regexp_has_newline
    from lark.parsers.lalr_analysis import Shift

    front = lark.parser
    table = front.parser._parse_table
    conf = front.lexer_conf
    if conf.g_regex_flags or any(t.pattern.flags for t in conf.terminals):
        raise _Fallback("regex flags")
    if not lark.options.maybe_placeholders or lark.options.keep_all_tokens:
        raise _Fallback("options")
    terminals = {t.name: t for t in conf.terminals}
    ignore = set(conf.ignore)

    rules: list = []
    rule_index: dict = {}

    def rule_id(rule) -> int:
        if rule not in rule_index:
            rule_index[rule] = len(rules)
            rules.append(_rule_entry(rule))
        return rule_index[rule]

    states = []
    for s in range(len(table.states)):
        acts = {}
        for sym, (action, arg) in table.states[s].items():
            acts[sym] = arg if action is Shift else ~rule_id(arg)
        states.append(acts)

    lexers: list = []
    lexer_of_accepts: dict = {}
    state_lexer = []
    for s in range(len(table.states)):
        accepts = frozenset(n for n in table.states[s] if n in terminals) | ignore
        if accepts not in lexer_of_accepts:
            lexer_of_accepts[accepts] = len(lexers)
            order, unless = _lexer_entry([terminals[n] for n in accepts], ignore)
            lexers.append((sorted(accepts), unless, order))
        state_lexer.append(lexer_of_accepts[accepts])
    root_order, _ = _lexer_entry(list(terminals.values()), ignore)

    return {
        "states": states,
        "rules": rules,
        "start_states": dict(table.start_states),
        "end_states": dict(table.end_states),
        "lexers": lexers,
        "state_lexer": state_lexer,
        "root": "|".join(f"(?P<{n}>{terminals[n].pattern.to_regexp()})" for n in root_order),
        "patterns": {n: t.pattern.to_regexp() for n, t in terminals.items()},
        "ignore": sorted(ignore),
        "newline_types": sorted(n for n, t in terminals.items() if _regexp_has_newline(t.pattern.to_regexp())),
    }


def _rule_entry(rule) -> tuple:
    """(origin, size, kind, builder name, child filter, nones appended, passthrough index)."""
    expansion = rule.expansion
    empty = rule.options.empty_indices
    # the child filter lark's ParseTreeBuilder uses (maybe_create_child_filter, LALR)
    if empty:
        counts = [len(ones) for ones in "".join(str(int(b)) for b in empty).split("0")]
    else:
        counts = [0] * (len(expansion) + 1)
    include, nones = [], 0
    for i, sym in enumerate(expansion):
        nones += counts[i]
        if not (sym.is_term and sym.filter_out):
            include.append((i, not sym.is_term and sym.name.startswith("_"), nones))
            nones = 0
    nones += counts[len(expansion)]
    needs_filter = bool(empty) or len(include) < len(expansion) or any(x for _, x, _ in include)
    child_filter = tuple(include) if needs_filter else None
    origin = rule.origin.name
    name = rule.alias or rule.options.template_source or origin
    expand1 = bool(rule.options.expand1 and not rule.alias)
    passthrough = -1
    if expand1:
        # ExpandSingleChild: only a fixed single child is emulated
        if child_filter is None and len(expansion) == 1:
            passthrough = 0
        elif child_filter is not None and len(include) == 1 and not include[0][1] \
                and include[0][2] == 0 and nones == 0:
            passthrough = include[0][0]
        else:       # a single child only sometimes (placeholders, inlined rules): not emulated
            raise _Fallback(f"rule {origin}: a ?-rule whose single child varies")
    kind = _SPLICE if origin.startswith("_") else _BUILD
    if passthrough == 0 and len(expansion) == 1:
        kind = _UNIT        # the value and its positions pass through unchanged
    return (origin, len(expansion), kind, str(name), child_filter, nones, passthrough)


def _lexer_entry(terms: list, ignore: set) -> tuple:
    """One contextual lexer state as lark's BasicLexer builds it: the names of its terminals
    in the order they are tried, without the string terminals that a regexp also matches,
    and for those regexps {text: string terminal} to retype a match (`_create_unless`)."""
    from lark.lexer import PatternRE, PatternStr
    terms = sorted(terms, key=lambda t: (-t.priority, -t.pattern.max_width, -len(t.pattern.value), t.name))
    embedded = set()
    unless: dict = {}
    for retok in [t for t in terms if isinstance(t.pattern, PatternRE)]:
        for strtok in [t for t in terms if isinstance(t.pattern, PatternStr)]:
            if strtok.priority != retok.priority:
                continue
            s = strtok.pattern.value
            m = re.match(retok.pattern.to_regexp(), s)
            if m and m.group(0) == s:
                unless.setdefault(retok.name, {})[s] = strtok.name
                embedded.add(strtok.name)
    for name in unless:
        if name in ignore:
            raise _Fallback("an ignored terminal that doubles as a keyword")
    return [t.name for t in terms if t.name not in embedded], unless


# ---- the driver ----------------------------------------------------------------------------

class Tables:
    """Tables ready to run.

    Lexing: lark compiles one regexp per contextual lexer state (about 60 here, 0.1 s of
    `re.compile`). This compiles one, of every terminal in the order lark's root lexer
    tries them, and per state keeps the set of terminals it accepts. Where the root
    regexp's match is one the state accepts, the state's own lexer would have found the
    same: the terminals ahead of it did not match, and the keyword-like strings a state
    may keep apart sort after the regexps that also match them. Otherwise (a unary '-',
    `in` where no name may follow) the state's terminals are tried one by one in its order.
    """

    def __init__(self, data: dict):
        self.states = data["states"]
        self.rules = [tuple(rule) + (_template(rule[4], rule[5]),) for rule in data["rules"]]
        self.start_states = data["start_states"]
        self.end_states = data["end_states"]
        lexers = [(frozenset(accepts), unless, tuple(order)) for accepts, unless, order in data["lexers"]]
        self.lexer = [lexers[i] for i in data["state_lexer"]]
        self.root_match = re.compile(data["root"]).match
        self._patterns = data["patterns"]
        self._single: dict = {}
        self.ignore = frozenset(data["ignore"])
        self.newline_types = frozenset(data["newline_types"])
        self.unit_runs: dict = {}      # start -> {(state below, top state, lookahead): top state}

    def match_in_state(self, text: str, pos: int, order: tuple):
        """The first of a state's terminals (in its lexer's order) that matches at pos."""
        for name in order:
            match = self._single.get(name)
            if match is None:
                match = self._single[name] = re.compile(self._patterns[name]).match
            m = match(text, pos)
            if m is not None:
                return m, name
        return None, None


def _template(child_filter, nones):
    """For a child filter that inlines no _rule: the children's indices, -1 for each None
    placeholder, in order; else None (the filter is then run step by step)."""
    if child_filter is None or any(expand for _, expand, _ in child_filter):
        return None
    out = []
    for i, _, add_none in child_filter:
        out += [-1] * add_none + [i]
    return tuple(out + [-1] * nones)


def _unit_run(states, rules, key, end_state):
    """The top state after the unit reductions that (state below, top state, lookahead) start."""
    below, top, typ = key
    while True:
        act = states[top].get(typ)
        if act is None or act >= 0 or rules[~act][2] != _UNIT:
            return top
        top = states[below][rules[~act][0]]
        if typ == "$END" and top == end_state:
            return top


def parse(tables: Tables, text: str, source, start: str, builders):
    """The AST of `text`, or None where the reference parser must decide (see module doc)."""
    try:
        return _run(tables, text, source, start, builders)
    except (_Fallback, NetDSLError):
        return None


def _run(T: Tables, text: str, source, start: str, builders):
    states, rules, lexer_of, root_match = T.states, T.rules, T.lexer, T.root_match
    ignore, newline_types = T.ignore, T.newline_types
    end_state = T.end_states[start]
    empty_span = _span(source, 1, 1, 1, 1)
    unit_runs = T.unit_runs.setdefault(start, {})
    methods = {}
    state_stack = [T.start_states[start]]
    value_stack: list = []
    pos_stack: list = []        # per value: None, or (line, col, end_line, end_col, is_tree)
    n = len(text)
    pos = 0
    line, line_start = 1, 0
    new_tok = Tok.__new__
    new_object, set_attr, span_class = object.__new__, object.__setattr__, Span   # see _span
    positioned, splice = _POSITIONED, _SPLICE
    push_state, push_value, push_pos = state_stack.append, value_stack.append, pos_stack.append
    at_end = False
    while True:
        # ---- the next token, lexed in the current parser state's context
        if pos < n:
            accepts, unless, order = lexer_of[state_stack[-1]]
            while True:
                m = root_match(text, pos)
                typ = m.lastgroup if m is not None else None
                if typ not in accepts:
                    m, typ = T.match_in_state(text, pos, order)
                    if m is None:
                        raise _Fallback
                value = m.group()
                tline, tcol = line, pos - line_start + 1
                if typ in newline_types:
                    nl = value.count("\n")
                    if nl:
                        line += nl
                        line_start = pos + value.rindex("\n") + 1
                pos = m.end()
                if typ not in ignore:
                    break
                if pos >= n:
                    typ = None
                    break
            if typ is None:
                at_end = True
            else:
                retype = unless.get(typ)
                if retype is not None:
                    typ = retype.get(value, typ)
                tpos = (tline, tcol, line, pos - line_start + 1, False)
                if typ in positioned:
                    tok = new_tok(Tok, value)
                    tok.type = typ
                    tok.line, tok.column, tok.end_line, tok.end_column = tpos[:4]
                else:
                    tok = value
        else:
            at_end = True
        if at_end:
            typ = "$END"
        # ---- feed it: reduce as long as the table says so, then shift
        while True:
            act = states[state_stack[-1]].get(typ)
            if act is None:
                raise _Fallback
            if act >= 0:
                if at_end:
                    raise _Fallback     # lark asserts this cannot happen
                push_state(act)
                push_value(tok)
                push_pos(tpos)
                break
            origin, size, kind, name, child_filter, nones, passthrough, template = rules[~act]
            if kind == 2:
                # _UNIT: `?expr: pipe` and the like, most reductions by far. A run of them
                # only replaces the top state, as decided by the state below and the
                # lookahead: the run's outcome is looked up once and remembered.
                key = (state_stack[-2], state_stack[-1], typ)
                top = unit_runs.get(key)
                if top is None:
                    top = unit_runs[key] = _unit_run(states, rules, key, end_state)
                state_stack[-1] = top
                if at_end and top == end_state:
                    return value_stack[-1]
                continue
            if size:
                children = value_stack[-size:]
                raw_pos = pos_stack[-size:]
                del state_stack[-size:]
                del value_stack[-size:]
                del pos_stack[-size:]
            else:
                children, raw_pos = [], []
            # positions, as lark's PropagatePositions computes them from the unfiltered children
            first = raw_pos[0] if size else None
            if first is None:
                for p in raw_pos:
                    if p is not None:
                        first = p
                        break
            if first is not None:
                last = raw_pos[-1]
                if last is None:
                    for p in reversed(raw_pos):
                        if p is not None:
                            last = p
                            break
                cont = (first[0], first[1], last[2], last[3], True)
            else:
                cont = None
            # the children the builder sees
            if child_filter is None:
                filtered = children
            elif template is not None:
                filtered = [children[i] if i >= 0 else None for i in template]
            else:
                filtered = []
                for i, expand, add_none in child_filter:
                    if add_none:
                        filtered += [None] * add_none
                    if expand:
                        if filtered:
                            filtered += children[i]
                        else:
                            filtered = children[i]
                    else:
                        filtered.append(children[i])
                if nones:
                    filtered += [None] * nones
            if passthrough >= 0:        # ExpandSingleChild: the child, with a wider container
                value = filtered[0]
                child_pos = raw_pos[passthrough]
                new_pos = cont if child_pos is not None and child_pos[4] else child_pos
            elif kind == splice:
                value, new_pos = filtered, cont
            else:
                fn = methods.get(name)
                if fn is None:
                    fn = methods[name] = getattr(builders, name, None)
                    if fn is None:
                        raise _Fallback(f"no builder for {name}")   # lark would keep a Tree
                if cont is not None:    # _span, inline
                    span = new_object(span_class)
                    set_attr(span, "__dict__", {"source": source, "line": cont[0], "col": cont[1],
                                                "end_line": cont[2], "end_col": cont[3]})
                else:
                    span = empty_span
                value, new_pos = fn(span, filtered), cont
            goto = states[state_stack[-1]][origin]
            push_state(goto)
            push_value(value)
            push_pos(new_pos)
            if at_end and goto == end_state:
                return value
