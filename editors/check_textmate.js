// Tokenises .net files with VS Code's own TextMate engine (vscode-textmate + vscode-oniguruma,
// the Oniguruma regex library VS Code uses) and reports every non-space character that no rule
// of the grammar scoped. tests/test_textmate.py checks the same with Python's `re` and a small
// matcher, so CI needs no Node; this script is the cross-check against the real engine:
//
//   mkdir -p /tmp/tm && (cd /tmp/tm && npm install vscode-textmate vscode-oniguruma)
//   NODE_PATH=/tmp/tm/node_modules node editors/check_textmate.js \
//       editors/netdsl.tmLanguage.json examples/*.net netdsl/std/*.net
//
// With --dump it prints each file's tokens and scopes as JSON instead.
'use strict';

const fs = require('fs');
const path = require('path');
const vsctm = require('vscode-textmate');
const oniguruma = require('vscode-oniguruma');

const args = process.argv.slice(2);
const dump = args[0] === '--dump' ? args.shift() : null;
const [grammarPath, ...files] = args;
const wasm = fs.readFileSync(path.join(path.dirname(require.resolve('vscode-oniguruma')), 'onig.wasm'));
const onigLib = oniguruma.loadWASM(wasm.buffer).then(() => ({
  createOnigScanner: (patterns) => new oniguruma.OnigScanner(patterns),
  createOnigString: (s) => new oniguruma.OnigString(s),
}));
const registry = new vsctm.Registry({
  onigLib,
  loadGrammar: async () => vsctm.parseRawGrammar(fs.readFileSync(grammarPath, 'utf8'), grammarPath),
});

registry.loadGrammar('source.netdsl').then((grammar) => {
  const result = {};
  let unscoped = 0;
  for (const file of files) {
    const lines = fs.readFileSync(file, 'utf8').split('\n');
    let stack = vsctm.INITIAL;
    const tokens = [];
    lines.forEach((line, i) => {
      const r = grammar.tokenizeLine(line, stack);
      for (const t of r.tokens) {
        const end = Math.min(t.endIndex, line.length);
        const scopes = t.scopes.slice(1);
        tokens.push([i + 1, t.startIndex, end, scopes]);
        const text = line.slice(t.startIndex, end);
        if (scopes.length === 0 && text.trim()) {
          unscoped += 1;
          console.log(`${file}:${i + 1}:${t.startIndex + 1}: no scope for ${JSON.stringify(text)}`);
        }
      }
      stack = r.ruleStack;
    });
    result[file] = tokens;
  }
  if (dump) {
    process.stdout.write(JSON.stringify(result));
  } else {
    console.log(`${files.length} files, ${unscoped} unscoped spans`);
  }
  process.exitCode = unscoped ? 1 : 0;
});
