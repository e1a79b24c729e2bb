"""The TextMate grammar (editors/netdsl.tmLanguage.json) and the VS Code extension around it.

The grammar's regular expressions are written in the subset Oniguruma and Python's `re` read
alike, so they are compiled and run here with `re`: a small TextMate matcher below tokenises
every example line by line (as VS Code does: `match` rules, `begin`/`end` regions across lines,
`include`s, the end pattern winning ties) and every non-space character must get a scope.
Node is not needed; when it is on the PATH, extension.js is syntax-checked with it.
"""
import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from netdsl.editors import pygments_lexer as P

ROOT = Path(__file__).resolve().parent.parent
EDITORS = ROOT / "editors"
GRAMMAR_FILE = EDITORS / "netdsl.tmLanguage.json"
VSCODE = EDITORS / "vscode"
SPECS = sorted((ROOT / "examples").glob("*.net")) + sorted((ROOT / "netdsl" / "std").glob("*.net"))

sys.path.insert(0, str(ROOT / "tests"))
from fuzz.spec_gen import generate  # noqa: E402

FUZZ_SEEDS = range(40)


def _maker():
    spec = importlib.util.spec_from_file_location("make_syntax", EDITORS / "make_syntax.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def grammar():
    return json.loads(GRAMMAR_FILE.read_text(encoding="utf-8"))


# ---- a small TextMate matcher -----------------------------------------------------------

class Rule:
    def __init__(self, raw: dict, repo: dict, cache: dict):
        self.name = raw.get("name")
        self.content_name = raw.get("contentName")
        self.match = re.compile(raw["match"]) if "match" in raw else None
        self.begin = re.compile(raw["begin"]) if "begin" in raw else None
        self.end = re.compile(raw["end"]) if "end" in raw else None
        self.captures = raw.get("captures", {})
        self.begin_captures = raw.get("beginCaptures", self.captures)
        self.end_captures = raw.get("endCaptures", self.captures)
        self.patterns = _flatten(raw.get("patterns", []), repo, cache)


def _flatten(patterns: list, repo: dict, cache: dict) -> list:
    out = []
    for p in patterns:
        if "include" in p:
            key = p["include"]
            assert key.startswith("#"), key
            raw = repo[key[1:]]
        else:
            raw = p
        if "match" in raw or "begin" in raw:
            rid = id(raw)
            if rid not in cache:
                cache[rid] = None
                cache[rid] = Rule(raw, repo, cache)
            out.append(cache[rid])
        else:
            out.extend(_flatten(raw["patterns"], repo, cache))
    return out


class Matcher:
    def __init__(self, grammar: dict):
        self.root = _flatten(grammar["patterns"], grammar["repository"], {})

    def tokenize(self, text: str):
        """[(line number, start, end, scopes)] for every scoped span, and the spans with none."""
        stack = []          # open begin/end regions
        scoped, bare = [], []
        for lineno, line in enumerate(text.split("\n"), 1):
            line += "\n"
            pos = 0
            found = {}      # regex -> its leftmost match from an earlier pos of this line

            def search(regex):
                if regex in found:
                    m = found[regex]
                    if m is None or m.start() >= pos:
                        return m
                found[regex] = m = regex.search(line, pos)
                return m

            while pos < len(line):
                region = stack[-1] if stack else None
                patterns = region.patterns if region else self.root
                best = None
                if region is not None:
                    m = search(region.end)
                    if m:
                        best = (m.start(), 0, "end", region, m)
                for i, rule in enumerate(patterns):
                    m = search(rule.match or rule.begin)
                    if m and (best is None or m.start() < best[0]):
                        best = (m.start(), i + 1, "rule", rule, m)
                scopes = [r.name for r in stack if r.name]
                if best is None:
                    (scoped if scopes else bare).append((lineno, pos, len(line), scopes))
                    break
                start, _, kind, rule, m = best
                if start > pos:
                    (scoped if scopes else bare).append((lineno, pos, start, scopes))
                if kind == "end":
                    self._emit(scoped, bare, lineno, m, None, rule.end_captures, scopes)
                    stack.pop()
                elif rule.begin is not None:
                    self._emit(scoped, bare, lineno, m, rule.name, rule.begin_captures, scopes)
                    stack.append(rule)
                else:
                    if m.end() == m.start():
                        (scoped if scopes else bare).append((lineno, start, start + 1, scopes))
                        pos = start + 1
                        continue
                    self._emit(scoped, bare, lineno, m, rule.name, rule.captures, scopes)
                pos = m.end()
        return scoped, bare

    @staticmethod
    def _emit(scoped, bare, lineno, m, name, captures, outer):
        if m.end() == m.start():
            return
        base = outer + ([name] if name else [])
        marks = [list(base) for _ in range(m.end() - m.start())]
        for key, cap in captures.items():
            g = int(key)
            if cap.get("name") and m.group(g) is not None:
                for k in range(m.start(g), m.end(g)):
                    marks[k - m.start()].append(cap["name"])
        for k, scopes in enumerate(marks):
            (scoped if scopes else bare).append((lineno, m.start() + k, m.start() + k + 1, scopes))


@pytest.fixture(scope="module")
def matcher(grammar):
    return Matcher(grammar)


def unscoped(matcher, text):
    lines = text.split("\n") + [""]
    _, bare = matcher.tokenize(text)
    return [(ln, lines[ln - 1][s:e].strip()) for ln, s, e, _ in bare if lines[ln - 1][s:e].strip()]


def scopes_of(matcher, text, word, nth=0):
    """The scopes of the first character of the nth occurrence of `word` in `text`."""
    offset = -1
    for _ in range(nth + 1):
        offset = text.index(word, offset + 1)
    line = text.count("\n", 0, offset) + 1
    col = offset - (text.rfind("\n", 0, offset) + 1)
    scoped, _ = matcher.tokenize(text)
    for ln, s, e, scopes in scoped:
        if ln == line and s <= col < e:
            return scopes
    return []


# ---- tests --------------------------------------------------------------------------------

def test_grammar_is_valid_json_with_its_scope(grammar):
    assert grammar["scopeName"] == "source.netdsl"
    assert grammar["fileTypes"] == ["net"]
    assert set(k["include"][1:] for k in grammar["patterns"]) <= set(grammar["repository"])


def test_every_regex_compiles_with_python_re(grammar):
    found = []

    def walk(node):
        if isinstance(node, dict):
            for key in ("match", "begin", "end"):
                if key in node:
                    found.append(node[key])
                    re.compile(node[key])
                    for bad in (r"\G", r"\h", r"\A", r"\z", "(?>", "*+", "++"):
                        assert bad not in node[key], (bad, node[key])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
    walk(grammar)
    assert len(found) > 30


def test_includes_resolve(grammar):
    text = json.dumps(grammar)
    for key in re.findall(r'"include": "#([\w-]+)"', text):
        assert key in grammar["repository"], key


def test_file_is_what_the_generator_writes():
    expected = _maker().render()
    assert GRAMMAR_FILE.read_text(encoding="utf-8") == expected, \
        "editors/netdsl.tmLanguage.json is stale: run python editors/make_syntax.py"


def test_vscode_copy_equals_the_grammar():
    assert (VSCODE / "syntaxes" / "netdsl.tmLanguage.json").read_bytes() == GRAMMAR_FILE.read_bytes()


def test_word_lists_equal_the_lexers(grammar):
    maker = _maker()
    repo = grammar["repository"]
    keywords = [w for p in repo["keyword"]["patterns"] for w in maker.word_list(p["match"])]
    assert sorted(keywords) == sorted(P.KEYWORDS)
    assert len(keywords) == len(set(keywords))
    assert sorted(maker.word_list(repo["layer"]["match"])) == sorted(P.LAYERS)
    assert sorted(maker.word_list(repo["function-op"]["match"])) == sorted(P.FUNCTION_OPS)
    assert sorted(maker.word_list(repo["builtin"]["match"])) == sorted(P.BUILTINS)
    assert sorted(maker.word_list(repo["dtype"]["match"])) == sorted(P.DTYPES)
    assert "Conv2d" in P.LAYERS and "concat" in P.FUNCTION_OPS and len(P.OPS) > 50


@pytest.mark.parametrize("path", SPECS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_character_of_the_specs_is_scoped(matcher, path):
    text = path.read_text(encoding="utf-8")
    assert unscoped(matcher, text) == []


def test_every_character_of_fuzz_specs_is_scoped(matcher):
    for seed in FUZZ_SEEDS:
        text = generate(seed).text
        assert unscoped(matcher, text) == [], seed


def test_matcher_reports_what_no_rule_matches(matcher):
    # the check above is not vacuous: a character outside the language stays unscoped
    assert unscoped(matcher, "network N { x = a $ b }") == [(1, "$")]


SAMPLE = '''import "std/residual.net"   # the blocks
# a comment
block Unit(c: int, stride = 1) (x) -> y {
    "A unit: conv, then \\"norm\\"\\n."
    y = x -> conv{0}: Conv2d(c, 3, stride = stride, bias = false) -> relu: ReLU
    y = concat(y, x, dim = 1) -> Dropout(0.5) -> LayerNorm(eps = 1e-5)
}
block Seq(c: int) [
    'a sequential block'
    Conv2d(c, 3)
]
network Net(block: block = Unit, n: int = 2) {
    """Multi-line
    docstring."""
    input image: f32[N, 3, H, W]
    x = image
    for i in range(n) { x = x -> stage{i}: block(64 * 2 ** i) }
    if n > 1 and not false { x = x -> ...Seq(8) }
    output y = x -> head: Linear(10)
    freeze stage0.conv0
}
'''


def test_scopes_of_the_sample(matcher):
    assert unscoped(matcher, SAMPLE) == []

    def has(word, scope, nth=0):
        scopes = scopes_of(matcher, SAMPLE, word, nth)
        assert any(s.startswith(scope) for s in scopes), (word, scopes)

    has("import", "keyword.control.import")
    has('"std', "string.quoted.double")
    has("# the blocks", "comment.line.number-sign")
    has("block Unit", "storage.type.block")
    has("Unit(", "entity.name.type.block")
    has("Net(", "entity.name.function.network")
    has("c: int", "variable.parameter")
    has("int,", "support.type")
    has('"A unit', "string.quoted.docstring.single")
    has('\\"norm', "constant.character.escape")
    has("'a sequential", "string.quoted.docstring.single")
    has('"""Multi', "string.quoted.docstring.multi")
    has("docstring.", "string.quoted.docstring.multi")
    has("Conv2d", "support.class.layer")
    has("concat", "support.function.op")
    has("range", "support.function.builtin")
    has("f32", "support.type.dtype")
    has("conv{0}", "entity.name.label")
    has("relu:", "entity.name.label")
    has("head:", "entity.name.label")
    has("->", "keyword.operator.chain")
    has("...", "keyword.operator.splice")
    has("**", "keyword.operator.arithmetic")
    has("3,", "constant.numeric.integer")
    has("0.5", "constant.numeric.float")
    has("1e-5", "constant.numeric.float")
    has("for", "keyword.control.loop")
    has("if n", "keyword.control.conditional")
    has("in range", "keyword.operator.logical")
    has("and", "keyword.operator.logical")
    has("false {", "constant.language.boolean")
    has("input", "keyword.other.declaration")
    has("image:", "variable.other.declaration")
    has("output", "keyword.other.declaration")
    has("freeze", "keyword.other.freeze")
    has("conv0", "variable.other.member")
    # a keyword used as a name: the parameter `block` and its call
    has("block: block", "variable.parameter")
    has("block(64", "variable.other.netdsl")
    assert not any("storage.type" in s for s in scopes_of(matcher, SAMPLE, "block(64"))
    assert not any("string" in s for s in scopes_of(matcher, SAMPLE, "x = image"))


def test_unterminated_string_ends_with_its_line(matcher):
    text = 'network N {\n    x = "open\n    y = x\n}\n'
    assert not any("string" in s for s in scopes_of(matcher, text, "y = x"))


# ---- VS Code extension ------------------------------------------------------------------

@pytest.fixture(scope="module")
def package():
    return json.loads((VSCODE / "package.json").read_text(encoding="utf-8"))


def test_vscode_package(package):
    contributes = package["contributes"]
    (lang,) = contributes["languages"]
    assert lang["id"] == "netdsl" and ".net" in lang["extensions"]
    assert (VSCODE / lang["configuration"]).is_file()
    (gram,) = contributes["grammars"]
    assert gram["language"] == "netdsl" and gram["scopeName"] == "source.netdsl"
    assert (VSCODE / gram["path"]).resolve() == (VSCODE / "syntaxes" / "netdsl.tmLanguage.json")
    assert "onLanguage:netdsl" in package["activationEvents"]
    assert (VSCODE / package["main"]).is_file()
    assert "vscode-languageclient" in package["dependencies"]
    setting = contributes["configuration"]["properties"]["netdsl.serverPath"]
    assert setting["default"] == "netdsl" and setting["type"] == "string"
    assert not (VSCODE / "node_modules").exists()


def test_vscode_language_configuration():
    conf = json.loads((VSCODE / "language-configuration.json").read_text(encoding="utf-8"))
    assert conf["comments"] == {"lineComment": "#"}
    assert ["(", ")"] in conf["brackets"] and ["[", "]"] in conf["brackets"] \
        and ["{", "}"] in conf["brackets"]
    closing = {p["open"]: p["close"] for p in conf["autoClosingPairs"]}
    assert closing["("] == ")" and closing["["] == "]" and closing["{"] == "}" and closing['"'] == '"'


def test_vscode_extension_starts_netdsl_lsp():
    js = (VSCODE / "extension.js").read_text(encoding="utf-8")
    assert "require('vscode-languageclient/node')" in js
    assert "args: ['lsp']" in js
    assert "get('serverPath', 'netdsl')" in js
    node = shutil.which("node")
    if node:
        subprocess.run([node, "--check", str(VSCODE / "extension.js")], check=True)


# ---- Vim / Neovim syntax file -------------------------------------------------------------

def test_vim_syntax_file_is_what_the_generator_writes():
    path = EDITORS / "neovim" / "syntax" / "netdsl.vim"
    assert path.read_text(encoding="utf-8") == _maker().render_vim(), \
        "editors/neovim/syntax/netdsl.vim is stale: run python editors/make_syntax.py"


VIM_PROBES = [("import", 0, "netdslImport"), ("block Unit", 0, "netdslDefine"), ("Unit", 0, "netdslDefName"),
              ("Conv2d", 0, "netdslLayer"), ("concat", 0, "netdslFunctionOp"),
              ("range", 0, "netdslBuiltin"), ("f32", 0, "netdslType"), ("for", 0, "netdslKeyword"),
              ("and", 0, "netdslOperatorWord"), ("false", 0, "netdslBoolean"),
              ("input", 0, "netdslDeclaration"), ("relu:", 0, "netdslLabel"),
              ("# the blocks", 0, "netdslComment"), ('"A unit', 0, "netdslString"),
              ('\\"norm', 0, "netdslEscape"), ('"""Multi', 0, "netdslString"),
              ("docstring.", 0, "netdslString"), ("0.5", 0, "netdslFloat"), ("3,", 0, "netdslNumber"),
              ("->", 0, "netdslOperator"), ("x = image", 0, "")]


def test_vim_highlights_the_sample(tmp_path):
    vim = shutil.which("vim")
    if vim is None:
        pytest.skip("vim is not installed")
    sample = tmp_path / "sample.net"
    sample.write_text(SAMPLE, encoding="utf-8")
    out = tmp_path / "out.txt"
    lines = [
        "set nocompatible",
        f"let &runtimepath = '{EDITORS / 'neovim'},' . &runtimepath",
        "filetype on", "syntax on", f"edit {sample}", "let out = [&filetype]",
    ]
    for word, nth, _ in VIM_PROBES:
        offset = -1
        for _ in range(nth + 1):
            offset = SAMPLE.index(word, offset + 1)
        line = SAMPLE.count("\n", 0, offset) + 1
        col = offset - (SAMPLE.rfind("\n", 0, offset) + 1) + 1
        lines.append(f"call add(out, synIDattr(synID({line}, {col}, 1), 'name'))")
    lines += [f"call writefile(out, '{out}')", "qall!"]
    script = tmp_path / "check.vim"
    script.write_text("\n".join(lines) + "\n")
    subprocess.run([vim, "-Es", "-N", "-u", "NONE", "-i", "NONE", "-S", str(script)],
                   timeout=60, check=False, stdin=subprocess.DEVNULL)
    got = out.read_text().split("\n")
    assert got[0] == "netdsl"
    assert dict(zip([w for w, _, _ in VIM_PROBES], got[1:])) == {w: g for w, _, g in VIM_PROBES}


def _node_textmate():
    """node, when it can load vscode-textmate and vscode-oniguruma (e.g. NODE_PATH set to an
    `npm install vscode-textmate vscode-oniguruma` folder); None otherwise."""
    node = shutil.which("node")
    if node is None:
        return None
    probe = subprocess.run([node, "-e", "require('vscode-textmate'); require('vscode-oniguruma')"],
                           capture_output=True, timeout=30)
    return node if probe.returncode == 0 else None


def test_vscode_engine_scopes_like_the_matcher(matcher, tmp_path):
    """Cross-check against VS Code's own engine (Oniguruma), where it is installed: every
    character gets the same scopes as from the matcher above."""
    node = _node_textmate()
    if node is None:
        pytest.skip("vscode-textmate / vscode-oniguruma not resolvable by node (see editors/check_textmate.js)")
    files = list(SPECS)
    for seed in range(10):
        f = tmp_path / f"fuzz{seed}.net"
        f.write_text(generate(seed).text, encoding="utf-8")
        files.append(f)
    (tmp_path / "sample.net").write_text(SAMPLE, encoding="utf-8")
    files.append(tmp_path / "sample.net")
    run = subprocess.run([node, str(EDITORS / "check_textmate.js"), "--dump", str(GRAMMAR_FILE),
                          *map(str, files)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    dumped = json.loads(run.stdout)
    differ = []
    for f in files:
        text = f.read_text(encoding="utf-8")
        lines = text.split("\n")
        ours = {}
        for ln, s, e, scopes in matcher.tokenize(text)[0]:
            for c in range(s, e):
                ours[ln, c] = set(scopes)
        for ln, s, e, scopes in dumped[str(f)]:
            for c in range(s, e):
                if lines[ln - 1][c].strip() and set(scopes) != ours.get((ln, c), set()):
                    differ.append((f.name, ln, c, scopes, ours.get((ln, c))))
    assert differ == []


MOCK_VSCODE = r"""
const calls = [];
let config = { serverPath: 'netdsl' };
const handlers = {};
module.exports = {
  calls, handlers, setConfig: (c) => { config = c; },
  workspace: {
    getConfiguration: (section) => ({ get: (key, dflt) => (section === 'netdsl' && key in config ? config[key] : dflt) }),
    createFileSystemWatcher: (glob) => ({ glob }),
    onDidChangeConfiguration: (f) => { handlers.config = f; return { dispose() {} }; },
  },
  commands: { registerCommand: (name, f) => { handlers[name] = f; return { dispose() {} }; } },
  window: { showErrorMessage: (m) => calls.push(['error', m]) },
};
"""
MOCK_CLIENT = r"""
const vscode = require('vscode');
class LanguageClient {
  constructor(id, name, server, options) { vscode.calls.push(['new', id, server, options]); this.id = id; }
  async start() { vscode.calls.push(['start', this.id]); }
  async stop() { vscode.calls.push(['stop', this.id]); }
}
module.exports = { LanguageClient, TransportKind: { stdio: 0 } };
"""
DRIVER = r"""
const vscode = require('vscode');
const ext = require(process.argv[2]);
(async () => {
  const context = { subscriptions: [] };
  await ext.activate(context);
  vscode.setConfig({ serverPath: '/opt/venv/bin/netdsl' });
  await vscode.handlers.config({ affectsConfiguration: (s) => s === 'netdsl.serverPath' });
  await vscode.handlers['netdsl.restartServer']();
  await ext.deactivate();
  console.log(JSON.stringify(vscode.calls));
})();
"""


def test_vscode_extension_starts_and_restarts_the_server(tmp_path):
    """extension.js against stand-ins for the `vscode` and `vscode-languageclient` modules:
    `netdsl lsp` over stdio for netdsl documents, restarted with the new netdsl.serverPath."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    mods = tmp_path / "node_modules"
    (mods / "vscode").mkdir(parents=True)
    (mods / "vscode" / "index.js").write_text(MOCK_VSCODE)
    (mods / "vscode-languageclient").mkdir()
    (mods / "vscode-languageclient" / "node.js").write_text(MOCK_CLIENT)
    shutil.copy(VSCODE / "extension.js", tmp_path / "extension.js")
    (tmp_path / "driver.js").write_text(DRIVER)
    run = subprocess.run([node, str(tmp_path / "driver.js"), str(tmp_path / "extension.js")],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    calls = json.loads(run.stdout)
    news = [c for c in calls if c[0] == "new"]
    assert [c[0] for c in calls] == ["new", "start", "stop", "new", "start", "stop", "new", "start",
                                     "stop"]
    first, second = news[0][2], news[1][2]
    assert first["run"] == {"command": "netdsl", "args": ["lsp"], "transport": 0}
    assert first["debug"] == first["run"]
    assert second["run"]["command"] == "/opt/venv/bin/netdsl"
    selector = news[0][3]["documentSelector"]
    assert {"scheme": "file", "language": "netdsl"} in selector
