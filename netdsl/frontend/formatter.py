"""`.net` text -> the same text in the canonical layout (`netdsl fmt`).

The formatter re-spaces the token stream and never rewrites a token: names, numbers and
strings (docstrings included) stay exactly as written, so the formatted text reads to the
same AST (the grammar ignores whitespace and comments). It keeps every comment. As gofmt
does, it keeps the author's line breaks where a line may break, and decides everything else:

- indentation: 4 spaces per `{ }` body and per bracket that ends its line; the lines of a
  bracket whose contents start on its own line line up after the bracket (``Conv2d(a, b,``
  / ``       c)``); a chain continued on the next line puts its ``->`` under the chain's
  first ``->``;
- spacing: one space around ``=``, ``->``, binary operators and after ``,`` and ``:``; none
  inside ``( )`` and list ``[ ]``; one inside a group's ``[ ]`` and a one-line body's
  ``{ }``; two between statements that share a line (``[ Conv2d(c, 3)  ReLU ]``);
- line breaks: a `{ }` body is either one line or one statement per line; a line longer
  than LIMIT columns breaks before a chain's ``->``, after a ``,`` of an argument list, or
  between a group's statements; at most one blank line in a row, and one blank line around
  every block and network definition;
- comments: own-line comments take the indentation of the code they precede; trailing
  comments of consecutive lines line up (at the column the first of them had, or further
  right where a line's code needs it); a run of one-line aliases lines up its ``=``.

`format_text` checks its own result: the text must parse to the same AST with the same
comments, or it raises `FormatterError` (a bug) rather than return it.
"""
from __future__ import annotations

from functools import lru_cache

from ..errors import ParseError

LIMIT = 100          # columns
INDENT = 4

__all__ = ["format_text", "FormatterError", "LIMIT"]


class FormatterError(RuntimeError):
    """The formatter would have changed the meaning of a spec or lost a comment (a bug)."""


@lru_cache(maxsize=1)
def _cst_parser():
    """The grammar's LALR parser keeping every token (keywords and punctuation too)."""
    from lark import Lark

    from . import fastparse
    from .grammar_path import grammar_file
    cache = fastparse.lark_cache_file()     # beside the parser's own (lark checks the grammar)
    if cache:
        from pathlib import Path
        cache = str(Path(cache).with_name("fmt-" + Path(cache).name))
    return Lark.open(str(grammar_file()), parser="lalr", start="start", keep_all_tokens=True,
                     maybe_placeholders=True, cache=cache or False)


# ---- the token stream --------------------------------------------------------------------

_BODY_RULES = frozenset({"body", "gbody", "group", "seq_body"})
_CALL_RULES = frozenset({"call", "callee", "block_def", "seq_block_def", "network_def",
                         "network_alias", "block_alias"})
_DIMS_RULES = frozenset({"index", "input_decl", "param_decl", "param_init"})
_STMT_RULES = frozenset({"layer_stmt", "assign", "tuple_assign", "if_stmt", "for_stmt", "return_stmt",
                         "input_decl", "output_decl", "output_set", "param_decl", "param_init",
                         "freeze_stmt", "splice_stmt", "anon_group"})
_DEF_RULES = frozenset({"block_def", "seq_block_def", "network_def"})
_ITEM_RULES = _DEF_RULES | {"block_alias", "network_alias", "import_stmt"}
_LIST_RULES = frozenset({"arg_list", "param_list", "name_list", "dim_list", "list_lit", "tuple_lit",
                         "return_stmt", "freeze_stmt"})
_OPENERS = {"(": ")", "[": "]", "{": "}"}
_CLOSERS = frozenset(_OPENERS.values())



class _Group:
    """Places where a long line may break: the '->' of one chain, the items of one list, the
    statements of one group."""
    __slots__ = ("cands", "end", "fill", "reflow")

    def __init__(self, fill: bool = False):
        self.cands: list[int] = []
        self.end = 0            # index of the last token that belongs to the group
        self.fill = fill        # a list: once a long line broke in it, the rest is refilled
        self.reflow = False


class _Tok:
    __slots__ = ("text", "type", "rule", "start", "end", "index", "stmt", "level", "blank", "opens",
                 "closes", "ml", "tight", "cand", "cand_pos", "arrow", "nobreak", "pad", "pushes", "pops",
                 "sp")

    def __init__(self, tok, rule: str, index: int):
        self.text = str(tok)
        self.type = tok.type
        self.rule = rule
        self.start = tok.start_pos
        self.end = tok.end_pos
        self.index = index
        self.stmt = False       # starts a statement or a top-level item (or is a docstring)
        self.level = False      # elif / else: a line starting with it takes the statement's indent
        self.blank = False      # a top-level item that wants a blank line before it
        self.opens = None       # "body" ({ }), "group" ([ ] of statements) or "paren" (any other)
        self.closes = False
        self.ml = False         # a { } body laid out one statement per line
        self.tight = None       # the name template / freeze path it is part of: no spaces inside
        self.cand = None        # _Group: a long line may break before this token
        self.arrow = None       # _Group of the chain whose '->' this is
        self.nobreak = False    # joined to the token before it unless a comment intervenes
        self.pad = 0            # extra spaces before it (aligned '=' of aliases)
        self.pushes: list = []  # contexts that start at this token
        self.pops = 0           # contexts that end with this token
        self.sp = 1             # spaces before it when on the same line as the token before


class _Walker:
    """The parse tree (every token kept) -> a list of _Tok carrying the layout's marks.
    Iterative: a tree may nest deeper than Python's recursion limit allows."""

    def __init__(self, text: str):
        self.text = text
        self.toks: list[_Tok] = []
        self.ann: dict = {}          # id(lark token) -> {mark: value}
        self.chain_of: dict = {}     # id(pipeline tree) -> _Group of its (left-nested) chain
        self.pending_push: list = []

    def note(self, tok, **marks) -> None:
        self.ann.setdefault(id(tok), {}).update(marks)

    def walk(self, root) -> list[_Tok]:
        from lark import Token
        stack = [(root, None, None)]
        while stack:
            node, parent, tight = stack.pop()
            if callable(node) and not isinstance(node, Token) and not hasattr(node, "data"):
                node()
                continue
            if isinstance(node, Token):
                self._emit(node, parent, tight)
                continue
            children = [c for c in node.children if c is not None]
            after = self._enter(node, parent, children)
            if node.data in ("name_tpl", "freeze_path"):
                tight = id(node)
            elif node.data != "dash":
                tight = None
            if after is not None:
                stack.append((after, None, None))
            for c in reversed(children):
                stack.append((c, node, tight))
        return self.toks

    def _emit(self, tok, parent, tight) -> None:
        t = _Tok(tok, parent.data, len(self.toks))
        marks = self.ann.get(id(tok), {})
        t.stmt = marks.get("stmt", False)
        t.level = marks.get("level", False)
        t.blank = marks.get("blank", False)
        t.pad = marks.get("pad", 0)
        t.tight = tight
        t.pushes, self.pending_push = self.pending_push, []
        arrow = marks.get("arrow")
        if arrow is not None:
            t.arrow = arrow
        cand = marks.get("cand") or arrow
        if cand is not None:
            t.cand = cand
            t.cand_pos = len(cand.cands)
            cand.cands.append(t.index)
        if tok.type in ("LPAR", "LSQB", "LBRACE"):
            t.opens = marks.get("opens", "paren")
            t.ml = marks.get("ml", False)
        elif tok.type in ("RPAR", "RSQB", "RBRACE"):
            t.closes = True
        if tok.type in ("COMMA", "SEMICOLON", "COLON", "DOT") \
                or (tok.type == "LBRACE" and t.rule in ("body", "gbody")) \
                or (tok.type == "LPAR" and t.rule in _CALL_RULES) \
                or (tok.type == "LSQB" and t.rule in _DIMS_RULES) \
                or (tight is not None and self.toks and self.toks[-1].tight == tight):
            t.nobreak = True
        self.toks.append(t)

    def _pop_last(self) -> None:
        self.toks[-1].pops += 1

    def _enter(self, node, parent, children):
        """Marks for the tokens of `node` that depend on its rule; returns a callback to run
        after its last token, or None."""
        from lark import Token
        data = node.data
        after = []
        if data == "start":
            self._items(children)
        if data in _BODY_RULES:
            self._body(node, parent, children)
        if data in _ITEM_RULES:
            self.pending_push.append(("item", None))
            after.append(self._pop_last)
        elif data in _STMT_RULES and not (parent is not None and parent.data == "anon_group"):
            self.pending_push.append(("stmt", None))
            after.append(self._pop_last)
        if data in ("elif_clause", "else_clause"):
            self.note(_first_leaf(node), level=True)
        if data == "pipeline":
            grp = self.chain_of.get(id(node))
            if grp is None:                     # the outermost pipeline of a chain
                grp = _Group()
                self.pending_push.append(("chain", grp))

                def chain_done(grp=grp):
                    grp.end = len(self.toks) - 1
                    self._pop_last()
                after.append(chain_done)
            if hasattr(children[0], "data") and children[0].data == "pipeline":
                self.chain_of[id(children[0])] = grp
            for c in children:
                if isinstance(c, Token) and c == "->":
                    self.note(c, arrow=grp)
        if data in _LIST_RULES or data in ("group", "seq_body", "gbody"):
            grp = _Group(fill=data in _LIST_RULES)
            prev = None
            for c in children:
                if isinstance(c, Token) and c.type in ("RPAR", "RSQB", "RBRACE"):
                    break
                if data in ("group", "seq_body", "gbody"):
                    if prev is not None and not (isinstance(c, Token) and c.type == "SEMICOLON") \
                            and not (isinstance(prev, Token) and prev.type in ("LSQB", "LBRACE")):
                        self.note(_first_leaf(c), cand=grp)
                elif isinstance(prev, Token) and prev.type == "COMMA":
                    self.note(_first_leaf(c), cand=grp)
                prev = c

            def list_done(grp=grp):
                grp.end = len(self.toks) - 1
            after.append(list_done)
        if data in ("block_alias", "network_alias") and id(node) in self.ann:
            pad = self.ann[id(node)]["pad"]
            for c in children:
                if isinstance(c, Token) and c.type == "EQUAL":
                    self.note(c, pad=pad)
        if not after:
            return None

        def run_all():
            for cb in after:
                cb()
        return run_all

    def _items(self, children) -> None:
        """Top-level items: each starts a line; a definition gets a blank line before and after
        it; a run of one-line aliases on consecutive lines lines up its '='."""
        prev = None
        run: list = []

        def flush():
            if len(run) > 1:
                width = max(len(str(it.children[1])) for it in run)
                for it in run:
                    self.ann[id(it)] = {"pad": width - len(str(it.children[1]))}
            run.clear()
        for it in children:
            first = _first_leaf(it)
            self.note(first, stmt=True)
            if prev is not None and (prev.data in _DEF_RULES or it.data in _DEF_RULES):
                self.note(first, blank=True)
            alias = it.data in ("block_alias", "network_alias")
            if alias and run and run[-1].data == it.data and self._adjacent(run[-1], it):
                run.append(it)
            else:
                flush()
                if alias:
                    run.append(it)
            prev = it
        flush()

    def _adjacent(self, a, b) -> bool:
        """Two aliases on consecutive lines, the first on one line, nothing between them."""
        first, last = _first_leaf(a), _last_leaf(a)
        gap = self.text[last.end_pos:_first_leaf(b).start_pos]
        return first.line == last.end_line and gap.count("\n") == 1 and not gap.strip() \
            and _first_leaf(b).line == _last_leaf(b).end_line

    def _body(self, node, parent, children) -> None:
        from lark import Token
        opener, closer = children[0], children[-1]
        content = children[1:-1]
        for c in content:
            if not (isinstance(c, Token) and c.type == "SEMICOLON"):
                self.note(_first_leaf(c), stmt=True)
        if node.data in ("body", "gbody"):
            # a block's or network's body: one statement per line; others as the author wrote them
            ml = bool(content) and (closer.line != opener.end_line or parent.data in _DEF_RULES)
            self.note(opener, opens="body", ml=ml)
        else:
            self.note(opener, opens="group")


def _first_leaf(node):
    from lark import Token
    while not isinstance(node, Token):
        node = next(c for c in node.children if c is not None)
    return node


def _last_leaf(node):
    from lark import Token
    while not isinstance(node, Token):
        node = [c for c in node.children if c is not None][-1]
    return node


def _space(a: _Tok, b: _Tok) -> int:
    """Spaces between two tokens on one line."""
    if b.stmt and not a.opens:
        return 2                                    # statements sharing a line
    if b.type in ("COMMA", "SEMICOLON"):
        return 0
    if a.opens:
        if a.opens in ("body", "group"):
            return 0 if b.closes else 1
        return 0
    if b.closes:
        return 1 if b.rule in _BODY_RULES else 0
    if a.type in ("COMMA", "SEMICOLON"):
        return 1
    if a.tight is not None and a.tight == b.tight:
        if a.type == "INT" and b.type == "NAME" and b.text[0] in "eE" and b.text[1:2].isdigit():
            return 1                                # a-1 e5: joined, 1e5 would read as a number
        return 0                                    # layer{i}-x, block1-0, layer1.0.conv1
    if a.type == "INT" and b.type == "DOT":
        return 1                                    # 1 .x: joined, 1. would read as a number
    if b.type in ("COLON", "DOT") or a.type == "DOT" or a.text == "...":
        return 0
    if b.type == "LPAR" and b.rule in _CALL_RULES:
        return 0
    if b.type == "LSQB" and b.rule in _DIMS_RULES:
        return 0
    if a.rule in ("neg", "pos"):
        return 0                                    # unary -x
    return 1


# ---- comments and line breaks in the source between two tokens -----------------------------

def _gap(text: str, start: int, end: int):
    """Whitespace and comments between two tokens -> events: ("nl",) and ("comment", text, col)."""
    out = []
    i = start
    while i < end:
        ch = text[i]
        if ch == "\n":
            out.append(("nl",))
            i += 1
        elif ch == "#":
            j = text.find("\n", i, end)
            j = end if j < 0 else j
            col = i - (text.rfind("\n", 0, i) + 1)
            out.append(("comment", text[i:j].rstrip(), col))
            i = j
        else:
            i += 1
    return out


def _comments(text: str, toks: list[_Tok]) -> list[str]:
    """Every comment of a text, in order."""
    out, pos = [], 0
    for t in toks + [None]:
        end = t.start if t is not None else len(text)
        out += [e[1] for e in _gap(text, pos, end) if e[0] == "comment"]
        if t is not None:
            pos = t.end
    return out


# ---- layout ------------------------------------------------------------------------------

class _Ctx:
    """An open construct: the top level, a { } body, a [ ] group, another bracket, a
    statement or a chain. `base`: the indentation of the line it started on; `cont`: the
    column its continuation lines start at, once known; `block`: whether its contents
    started on a line of their own (None until the first one is placed)."""
    __slots__ = ("kind", "base", "cont", "block", "anchor", "ml", "strict")

    def __init__(self, kind: str, base: int, ml: bool = False, strict: bool = False):
        self.kind, self.base, self.ml, self.strict = kind, base, ml, strict
        self.cont = 0 if kind == "top" else None
        self.block = None
        self.anchor = None


class _Layout:
    def __init__(self, text: str, toks: list[_Tok]):
        self.text, self.toks = text, toks
        self.lines: list[list] = []     # [code, trailing comment or None, its column in the source]
        self.code = ""                  # the current line's code, indentation included
        self.comment = None
        self.ccol = 0
        self.col = 0                    # column after the current line's last character
        self.indent = 0                 # indentation of the current line
        self.stack = [_Ctx("top", 0)]
        self.oneline = 0                # one-line { } bodies open: nothing breaks inside them
        self.last = None                # the token placed last

    # -- output lines
    def _flush(self) -> None:
        if self.code or self.comment is not None:
            self.lines.append([self.code, self.comment, self.ccol])
        self.code, self.comment = "", None

    def _start_line(self, indent: int, blank: bool) -> None:
        self._flush()
        if blank and self.lines and self.lines[-1][0] and not (self.last is not None and self.last.opens):
            self.lines.append(["", None, 0])        # one blank line, never right after a bracket
        self.code, self.col, self.indent = " " * indent, indent, indent

    def _put(self, text: str, spaces: int) -> None:
        self.code += " " * spaces + text
        if "\n" in text:
            self.col = len(text) - text.rfind("\n") - 1
        else:
            self.col += spaces + len(text)

    # -- indentation
    @staticmethod
    def _content(c: _Ctx) -> int:
        return c.cont if c.cont is not None else c.base + INDENT

    def _indent_for(self, t: _Tok) -> int:
        ctx = self.stack[-1]
        if t.closes:
            return ctx.base
        if t.stmt or t.level:
            for c in reversed(self.stack):
                if c.kind in ("top", "body", "group"):
                    return self._content(c)
        if t.arrow is not None and ctx.kind == "chain":
            return ctx.anchor if ctx.anchor is not None else ctx.base + INDENT
        if ctx.kind in ("body", "group", "paren", "top"):
            return self._content(ctx) if ctx.kind != "top" else INDENT
        if ctx.kind == "chain":
            return ctx.anchor + 3 if ctx.anchor is not None else ctx.base + INDENT
        if ctx.kind == "item":
            return ctx.base + 2 * INDENT                # a definition's header continued
        return ctx.base + INDENT                        # a statement continued

    def _comment_indent(self, t) -> int:
        if t is None:
            return self._content(self.stack[-1]) if self.stack[-1].kind != "top" else 0
        if t.closes:
            return self._content(self.stack[-1])
        return self._indent_for(t)

    # -- long lines
    def _too_long(self, t: _Tok) -> bool:
        grp = t.cand
        k = t.cand_pos
        end = grp.cands[k + 1] if k + 1 < len(grp.cands) else grp.end + 1
        if end == grp.end + 1:          # the last segment: with the closers and comma after it
            while end < len(self.toks) and (self.toks[end].closes or self.toks[end].type == "COMMA"):
                end += 1
        width = t.sp + t.pad + len(t.text.split("\n")[0])
        for j in range(t.index + 1, min(end, len(self.toks))):
            u = self.toks[j]
            between = self.text[self.toks[j - 1].end:u.start]
            if "\n" in between or "#" in between:
                break
            width += u.sp + len(u.text.split("\n")[0])
            if "\n" in u.text:
                break
        indent = self._indent_for(t)
        if t.arrow is not None and self.stack[-1].anchor is None and indent + width - t.sp > LIMIT:
            return False        # the chain's first '->': breaking there only helps if the rest fits
        return self.col + width > LIMIT and indent < self.col

    def _flat_width(self, i: int) -> int:
        """Width of the bracket opened at toks[i] up to its closer, laid out on one line."""
        depth, width = 0, 0
        for u in self.toks[i:]:
            if "\n" in u.text:
                return LIMIT + 1
            width += len(u.text) + (u.sp if u.index > i else 0)
            depth += 1 if u.opens else -1 if u.closes else 0
            if depth == 0:
                break
        return width

    # -- the walk
    def run(self) -> str:
        prev = None
        pos = 0
        for t in self.toks:
            force, nl, own = self._comments(_gap(self.text, pos, t.start), t)
            self._place(t, prev, force, nl, own)
            pos, prev = t.end, t
        self._comments(_gap(self.text, pos, len(self.text)), None)
        self._flush()
        return self._render()

    def _comments(self, events, t):
        nl, force, own = 0, False, False
        for ev in events:
            if ev[0] == "nl":
                nl += 1
                continue
            _, ctext, ccol = ev
            if nl == 0 and self.last is not None and self.code.strip() and self.comment is None:
                self.comment, self.ccol = ctext, ccol            # a trailing comment
            else:
                blank = bool(self.lines) and (nl >= 2 or (not own and t is not None and t.blank))
                self._start_line(self._comment_indent(t), blank)
                self._put(ctext, 0)
                self._flush()
                own = True
            nl, force = 0, True
        return force, nl, own

    def _place(self, t: _Tok, prev, force: bool, nl: int, own: bool) -> None:
        ctx = self.stack[-1]
        if prev is None:
            brk = True
        elif t.closes:
            if ctx.kind == "body":
                brk = force or ctx.ml
            else:
                brk = force or bool(ctx.block)
        elif t.stmt and (ctx.kind == "top" or (ctx.kind == "body" and ctx.ml
                                                 and (ctx.strict or ctx.block is None))):
            brk = True
        elif force:
            brk = True
        elif nl and not t.nobreak and not self.oneline and not (t.cand is not None and t.cand.reflow):
            brk = True
        elif t.cand is not None and not self.oneline and self._too_long(t):
            brk = True
            if t.cand.fill:
                t.cand.reflow = True        # the author's later breaks in this list give way
        else:
            brk = False
        if ctx.block is None and ctx.kind in ("body", "group", "paren") and not t.closes:
            ctx.block = brk                 # the first thing inside a bracket decides its style
            if not brk:
                ctx.cont = self.col + t.sp
        if brk:
            blank = (nl >= 2 and (t.stmt or t.level)) or (t.blank and not own)
            self._start_line(self._indent_for(t) if prev is not None else 0, blank)
            if ctx.block and ctx.cont is None and not t.closes:
                ctx.cont = self.indent
            self._put(t.text, 0)
        else:
            self._put(t.text, t.sp + t.pad)
        self.last = t
        if t.arrow is not None and ctx.kind == "chain" and ctx.anchor is None:
            ctx.anchor = self.col - len(t.text)
        for kind, _grp in t.pushes:
            self.stack.append(_Ctx(kind, self.indent))
        if t.opens == "body" and not t.ml and self.col - 1 + self._flat_width(t.index) > LIMIT:
            t.ml = True                     # a one-line body too long for its line
        if t.opens:
            base = self.indent
            if t.opens == "body" or t.rule == "seq_body":           # a body lines up with the start of its statement
                base = next(c.base for c in reversed(self.stack) if c.kind in ("stmt", "item", "top"))
            c = _Ctx(t.opens, base, ml=t.ml, strict=t.rule == "body")
            self.stack.append(c)
            if t.opens == "body" and not t.ml:
                self.oneline += 1
        if t.closes:
            c = self.stack.pop()
            if c.kind == "body" and not c.ml:
                self.oneline -= 1
        for _ in range(t.pops):
            self.stack.pop()

    def _render(self) -> str:
        lines = self.lines
        i = 0
        while i < len(lines):
            if lines[i][1] is None or not lines[i][0].strip():
                i += 1
                continue
            j = i
            while j < len(lines) and lines[j][1] is not None and lines[j][0].strip():
                j += 1
            width = max(_last_width(lines[k][0].rstrip()) for k in range(i, j)) + 2
            col = lines[i][2]       # the column the author gave the run's first comment, if it fits
            if col < width or any(col + len(lines[k][1]) > LIMIT for k in range(i, j)):
                col = width
            for k in range(i, j):
                code = lines[k][0].rstrip()
                lines[k] = [code + " " * (col - _last_width(code)) + lines[k][1], None, 0]
            i = j
        out = [line[0].rstrip() for line in lines]
        while out and not out[-1]:
            out.pop()
        return "\n".join(out) + "\n" if out else ""


def _last_width(code: str) -> int:
    return len(code) - code.rfind("\n") - 1


# ---- the entry point ---------------------------------------------------------------------

def _layout(text: str) -> tuple[str, list[str]]:
    """The text laid out, and the comments of the original."""
    tree = _cst_parser().parse(text)
    toks = _Walker(text).walk(tree)
    for a, b in zip(toks, toks[1:]):
        b.sp = _space(a, b)
    return _Layout(text, toks).run(), _comments(text, toks)


def _lexed_comments(text: str) -> list[str]:
    """The comments of a valid text, in order."""
    out, pos = [], 0
    for tok in _cst_parser().lex(text):
        out += [e[1] for e in _gap(text, pos, tok.start_pos) if e[0] == "comment"]
        pos = tok.end_pos
    out += [e[1] for e in _gap(text, pos, len(text)) if e[0] == "comment"]
    return out


def format_text(text: str, name: str = "<string>") -> str:
    """`text` in the canonical layout. Raises ParseError (located) on a syntax error, and
    FormatterError where the result would not mean the same (a bug in the formatter)."""
    from .parser import parse
    if text.startswith("\ufeff"):
        text = text[1:]
    before = parse(text, name)
    out, comments = _layout(text)
    try:
        after = parse(out, name)
    except ParseError as e:
        raise FormatterError(f"{name}: the formatted text does not parse ({e.message}); "
                             "left unformatted") from None
    if after != before:
        raise FormatterError(f"{name}: the formatted text would mean something else; left unformatted")
    if _lexed_comments(out) != comments:
        raise FormatterError(f"{name}: the formatted text would lose or reorder a comment; "
                             "left unformatted")
    return out
