"""Completion: the keyword arguments of the op or block whose call the cursor is in (with their
defaults and docs) first, then layer names (ops, with their documentation), the blocks and
networks in scope, the enclosing definition's parameters, built-in functions and the language's
keywords. Inside `import "...`: the .net files beside the document and in std/."""
from __future__ import annotations

import re

from lsprotocol import types

from ..frontend import ast as A
from ..ir.registry import REQUIRED, all_ops, get as get_op
from .hover import attr_line, definition_markdown, literal, op_markdown, param_text
from .scope import offset_of

KEYWORDS = ("network", "block", "import", "input", "output", "param", "return", "freeze", "for", "in",
            "if", "elif", "else", "and", "or", "not", "true", "false")

_TOKENS = re.compile(r'"""(?:[^"\\]|\\.|"(?!""))*(?:"""|$)|"(?:[^"\\\n]|\\.)*"?|\'(?:[^\'\\\n]|\\.)*\'?'
                     r"|#[^\n]*|[A-Za-z_][A-Za-z0-9_]*|==|<=|>=|!=|->|[()\[\]{}=,]|\s+|.", re.S)
_IMPORT = re.compile(r'\bimport\s+"([^"\n]*)$')
_CLOSED_STRING = re.compile(r'"""(?:[^"\\]|\\.|"(?!""))*"""|"(?:[^"\\\n]|\\.)*"|\'(?:[^\'\\\n]|\\.)*\'', re.S)


def in_string_or_comment(text: str) -> bool:
    """Whether the end of `text` is inside a comment or a string literal (left open there)."""
    last = None
    for last in _TOKENS.finditer(text):
        pass
    if last is None or last.end() != len(text):
        return False
    tok = last.group()
    if tok.startswith("#"):
        return True
    return tok[0] in "\"'" and _CLOSED_STRING.fullmatch(tok) is None


def call_context(text: str) -> tuple | None:
    """(callee name, keyword names already given) of the innermost call open at the end of
    `text`, or None when the end is not inside a call's parentheses."""
    stack = []          # [bracket, callee or None, given names]
    prev = prev2 = None
    for m in _TOKENS.finditer(text):
        tok = m.group()
        if tok.isspace() or tok.startswith("#"):
            continue
        if tok in ("(", "[", "{"):
            callee = prev if tok == "(" and prev is not None and re.match(r"[A-Za-z_]", prev) else None
            stack.append([tok, callee, set()])
        elif tok in (")", "]", "}"):
            if stack:
                stack.pop()
        elif tok == "=" and stack and stack[-1][0] == "(" and prev is not None and \
                re.match(r"[A-Za-z_]", prev) and prev2 in ("(", ","):
            stack[-1][2].add(prev)
        prev2, prev = prev, tok
    if stack and stack[-1][0] == "(" and stack[-1][1] is not None:
        return stack[-1][1], stack[-1][2]
    return None


def _markdown(text: str) -> types.MarkupContent:
    return types.MarkupContent(kind=types.MarkupKind.Markdown, value=text)


def _keyword_items(doc, callee: str, given: set) -> list:
    items = []
    spec = get_op(callee)
    if spec is not None:
        for i, a in enumerate(spec.attrs):
            if a.name in given:
                continue
            detail = a.kind + (" (required)" if a.default is REQUIRED else
                               f" = {literal(a.default)}" if a.default is not None else "")
            items.append(types.CompletionItem(
                label=a.name, kind=types.CompletionItemKind.Property, detail=detail,
                documentation=_markdown(f"{spec.name}: {attr_line(a)}"),
                insert_text=f"{a.name} = ", sort_text=f"0{i:03d}", preselect=(i == 0) or None))
        return items
    d = doc.definitions.get(callee)
    if d is not None:
        item = d.item
        if isinstance(item, (A.BlockAlias, A.NetworkAlias)):
            target = doc.definitions.get(item.target)
            item = target.item if target is not None else item
        for i, p in enumerate(getattr(item, "params", None) or []):
            if not isinstance(p, A.Param) or p.name in given:
                continue
            items.append(types.CompletionItem(
                label=p.name, kind=types.CompletionItemKind.Property, detail=param_text(p),
                documentation=_markdown(f"parameter of {d.kind} {d.name}"),
                insert_text=f"{p.name} = ", sort_text=f"0{i:03d}"))
    return items


def _import_items(doc, prefix: str) -> list:
    from ..ir.program import STD_DIR
    names = set()
    for f in sorted(STD_DIR.glob("*.net")):
        names.add(f"std/{f.name}")
    if doc.path:
        for f in sorted(doc.base_dir.glob("*.net")):
            if str(f) != doc.path:
                names.add(f.name)
    return [types.CompletionItem(label=n, kind=types.CompletionItemKind.File, sort_text=f"0{n}")
            for n in sorted(names) if n.startswith(prefix)]


def completion(doc, position: types.Position) -> types.CompletionList:
    line, col = doc.point(position)
    before = doc.text[:offset_of(doc.text, line, col)]
    m = _IMPORT.search(before[before.rfind("\n") + 1:])
    if m:
        return types.CompletionList(is_incomplete=False, items=_import_items(doc, m.group(1)))
    if in_string_or_comment(before):        # prose, not code: nothing to offer
        return types.CompletionList(is_incomplete=False, items=[])
    items = []
    ctx = call_context(before)
    if ctx is not None:
        items += _keyword_items(doc, *ctx)
    for name, spec in sorted(all_ops().items()):
        items.append(types.CompletionItem(
            label=name, kind=types.CompletionItemKind.Class,
            detail=("function" if spec.function else "layer") + " · " + spec.doc.split("\n")[0][:80],
            documentation=_markdown(op_markdown(spec)), sort_text=f"1{name}"))
    for name, d in sorted(doc.definitions.items()):
        items.append(types.CompletionItem(
            label=name, kind=types.CompletionItemKind.Function if d.kind == "block" else types.CompletionItemKind.Module,
            detail=d.kind + ("" if d.own else " (imported)"),
            documentation=_markdown(definition_markdown(doc, d)), sort_text=f"1{name}"))
    item = doc.item_at(line, col)
    for p in getattr(item, "params", None) or []:
        if isinstance(p, A.Param):
            items.append(types.CompletionItem(label=p.name, kind=types.CompletionItemKind.Variable,
                                              detail=param_text(p), sort_text=f"1{p.name}"))
    from ..ir.values import BUILTINS
    for name in sorted(BUILTINS):
        items.append(types.CompletionItem(label=name, kind=types.CompletionItemKind.Function,
                                          detail="built-in", sort_text=f"2{name}"))
    for kw in KEYWORDS:
        items.append(types.CompletionItem(label=kw, kind=types.CompletionItemKind.Keyword, sort_text=f"3{kw}"))
    seen, unique = set(), []
    for it in items:            # a keyword argument wins over a same-named layer or parameter
        if it.label not in seen:
            seen.add(it.label)
            unique.append(it)
    return types.CompletionList(is_incomplete=False, items=unique)
