#!/usr/bin/env node
/**
 * Imports nodejs/llhttp's request-parsing corpus (test/request/*.md, MIT) as data for our
 * conformance tests: packages/edgemesh-module/test/corpus/llhttp-requests.json. Only the cases
 * llhttp runs in its strict mode (meta type "request"; the lenient-* files and flags are left
 * out). Each case keeps its source (file, title), the exact bytes (the escapes of llhttp's
 * md-test.ts applied the same way) and what strict llhttp made of them: how many messages it
 * completed and its error, if any. The code that runs them is ours (http-differential.test.ts, and
 * http-native.test.ts's seeded fuzz).
 * Usage: node scripts/import-llhttp-corpus.js LLHTTP_CHECKOUT [REVISION_LABEL]
 */
const { execFileSync } = require('node:child_process');
const { writeFileSync } = require('node:fs');
const { join } = require('node:path');
const vm = require('node:vm');

const repo = process.argv[2];
const label = process.argv[3] ?? 'HEAD';
if (!repo) throw new Error('usage: import-llhttp-corpus.js LLHTTP_CHECKOUT [REVISION_LABEL]');
const git = (...a) => execFileSync('git', ['-C', repo, ...a], { encoding: 'utf8', maxBuffer: 1 << 26 });
const rev = git('rev-parse', 'HEAD').trim();
const files = git('ls-tree', '--name-only', 'HEAD', 'test/request/')
  .split('\n')
  .filter((f) => f.endsWith('.md') && !f.includes('lenient'));

/** md-test.ts's treatment of an http block, step for step. */
function bytesOf(input) {
  input = input.replace(/\n$/, '');
  input = input.replace(/\\(\r\n|\r|\n)/g, '');
  input = input.replace(/\r\n|\r|\n/g, '\r\n');
  input = input.replace(/\\r/g, '\r');
  input = input.replace(/\\n/g, '\n');
  input = input.replace(/\\t/g, '\t');
  input = input.replace(/\\f/g, '\f');
  input = input.replace(/\\x([0-9a-fA-F]+)/g, (_, hex) => String.fromCharCode(parseInt(hex, 16)));
  input = input.replace(/\\([0-7]{1,3})/g, (_, digits) => String.fromCharCode(parseInt(digits, 8)));
  input = input.replace(/\$\{(.+?)\}/g, (_, code) => vm.runInNewContext(code) + '');
  return input;
}

const cases = [];
for (const file of files) {
  const md = git('show', `HEAD:${file}`);
  // a case: a heading, a meta comment, an http block, a log block
  const re = /^#{2,3} (.+)\n+<!-- meta=(\{.*\}) -->\n```http\n([\s\S]*?)```\n+```log\n([\s\S]*?)```/gm;
  for (const m of md.matchAll(re)) {
    const meta = JSON.parse(m[2]);
    if (meta.type !== 'request' || Object.keys(meta).some((k) => k !== 'type' && k !== 'noScan')) continue;
    const log = m[4];
    const error = /error code=(\d+) reason="(.*)"/.exec(log);
    cases.push({
      file: file.replace('test/request/', ''),
      title: m[1].trim(),
      input: bytesOf(m[3]),
      messages: (log.match(/ message complete$/gm) ?? []).length,
      error: error ? { code: Number(error[1]), reason: error[2] } : undefined,
    });
  }
}
const out = {
  source: `https://github.com/nodejs/llhttp test/request/*.md at ${label} (${rev}), MIT License, Copyright Fedor Indutny and other contributors`,
  note: 'strict-mode request cases only; input is latin1; messages/error: what strict llhttp made of the input',
  cases,
};
writeFileSync(
  join(__dirname, '..', 'packages', 'edgemesh-module', 'test', 'corpus', 'llhttp-requests.json'),
  JSON.stringify(out, null, 1) + '\n',
);
console.log(`${cases.length} cases from ${files.length} files`);
