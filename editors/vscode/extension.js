// netdsl for VS Code: the language (.net files, highlighting from syntaxes/) and a client for
// the netdsl language server, started as `<netdsl.serverPath> lsp` over stdio.
'use strict';

const vscode = require('vscode');
const { LanguageClient, TransportKind } = require('vscode-languageclient/node');

let client;

function createClient() {
  const config = vscode.workspace.getConfiguration('netdsl');
  const command = config.get('serverPath', 'netdsl');
  const server = { command, args: ['lsp'], transport: TransportKind.stdio };
  const clientOptions = {
    documentSelector: [
      { scheme: 'file', language: 'netdsl' },
      { scheme: 'untitled', language: 'netdsl' },
    ],
    synchronize: {
      // imports: a change to another .net file can change this one's diagnostics
      fileEvents: vscode.workspace.createFileSystemWatcher('**/*.net'),
    },
  };
  return new LanguageClient('netdsl', 'netdsl', { run: server, debug: server }, clientOptions);
}

async function start() {
  client = createClient();
  try {
    await client.start();
  } catch (err) {
    const command = vscode.workspace.getConfiguration('netdsl').get('serverPath', 'netdsl');
    vscode.window.showErrorMessage(
      `netdsl: could not start the language server ('${command} lsp'): ${err}. ` +
      'Install netdsl (pip install netdsl) or set netdsl.serverPath.');
  }
}

async function stop() {
  if (client) {
    const old = client;
    client = undefined;
    try {
      await old.stop();
    } catch (err) {
      // it never started (see start): nothing to stop
    }
  }
}

async function activate(context) {
  context.subscriptions.push(
    vscode.commands.registerCommand('netdsl.restartServer', async () => {
      await stop();
      await start();
    }),
    vscode.workspace.onDidChangeConfiguration(async (event) => {
      if (event.affectsConfiguration('netdsl.serverPath')) {
        await stop();
        await start();
      }
    }),
    { dispose: () => stop() },
  );
  await start();
}

function deactivate() {
  return stop();
}

module.exports = { activate, deactivate };
