#!/usr/bin/env node
// Independent reference for skillgraft's GPT-2 tokenizer: the gpt-3-encoder npm package
// (installed by scripts/setup.sh into third_party/node_modules).
// Usage: node gpt2_encode.js PACKAGE_DIR TEXT_FILE [--json-lines]
// Prints the package's encode() of the file's text (read as UTF-8) as one JSON array of ids.
// With --json-lines, each line of the file is a JSON string, and one array is printed per line.
'use strict';
const fs = require('fs');
const path = require('path');

const [packageDir, textFile, mode] = process.argv.slice(2);
if (!packageDir || !textFile || (mode !== undefined && mode !== '--json-lines')) {
  process.stderr.write('usage: node gpt2_encode.js PACKAGE_DIR TEXT_FILE [--json-lines]\n');
  process.exit(2);
}
const { encode } = require(path.resolve(packageDir, 'Encoder.js'));
const content = fs.readFileSync(textFile, 'utf-8');
if (mode === '--json-lines') {
  const lines = content.split('\n').filter((line) => line.length > 0);
  process.stdout.write(lines.map((line) => JSON.stringify(encode(JSON.parse(line)))).join('\n') + '\n');
} else {
  process.stdout.write(JSON.stringify(encode(content)) + '\n');
}
