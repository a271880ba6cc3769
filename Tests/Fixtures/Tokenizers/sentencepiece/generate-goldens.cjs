#!/usr/bin/env node
// Writes the SentencePiece golden outputs the parity tests compare against, using the real SentencePiece (its C++
// compiled to WebAssembly: the npm package @sctg/sentencepiece-js 1.3.3). See README.md in this folder.
//
//   node generate-goldens.cjs <models-dir> [<node_modules dir holding @sctg/sentencepiece-js>]
//
// <models-dir> holds the .model files written by the explicit test SentencePieceParityTests.Write_models_for_goldens
// (the Mistral-derived BPE model and the tiny hand-made models, each with a .texts.json next to it). ALBERT's model is
// read from the fixtures. Raw SentencePiece behaviour is wanted, so the package's cleanText is never called.
'use strict';
const fs = require('fs');
const path = require('path');
const crypto = require('crypto');
const zlib = require('zlib');

const here = __dirname;
const repo = path.resolve(here, '..', '..', '..', '..');
const [modelsDir, modulesDir] = process.argv.slice(2);
if (!modelsDir) {
  console.error('usage: node generate-goldens.cjs <models-dir> [<node_modules dir>]');
  process.exit(2);
}

function findPackage() {
  const candidates = [];
  if (modulesDir) candidates.push(path.join(modulesDir, '@sctg', 'sentencepiece-js'));
  for (let dir = process.cwd(); ; dir = path.dirname(dir)) {
    candidates.push(path.join(dir, 'node_modules', '@sctg', 'sentencepiece-js'));
    if (path.dirname(dir) === dir) break;
  }
  for (const c of candidates) {
    const file = path.join(c, 'dist', 'index.cjs');
    if (fs.existsSync(file)) {
      const version = JSON.parse(fs.readFileSync(path.join(c, 'package.json'), 'utf8')).version;
      if (version !== '1.3.3') console.warn(`warning: @sctg/sentencepiece-js ${version}; the goldens were made with 1.3.3`);
      return require(file);
    }
  }
  throw new Error('@sctg/sentencepiece-js not found; npm install @sctg/sentencepiece-js@1.3.3 and pass its node_modules folder');
}

const { SentencePieceProcessor } = findPackage();

async function load(file) {
  const spp = new SentencePieceProcessor();
  await spp.load(file);
  return spp;
}

const sha256 = (buffer) => crypto.createHash('sha256').update(buffer).digest();

function idsBytes(ids) {
  const buffer = Buffer.alloc(ids.length * 4);
  ids.forEach((id, i) => buffer.writeInt32LE(id, i * 4));
  return buffer;
}

function varint(value) {
  const bytes = [];
  while (value >= 0x80) {
    bytes.push((value & 0x7f) | 0x80);
    value = Math.floor(value / 128);
  }
  bytes.push(value);
  return Buffer.from(bytes);
}

// The corpus documents, in the order the tests read them: every Brown Corpus paragraph (text split on '\n'),
// then every held-out document.
function corpusDocuments() {
  const docs = [];
  const lines = (file) => fs.readFileSync(path.join(repo, 'Samples', 'Data', file), 'utf8').split('\n').filter((l) => l.length > 0);
  for (const line of lines('brown.jsonl')) docs.push(...JSON.parse(line).text.split('\n'));
  for (const line of lines('heldout.jsonl')) docs.push(JSON.parse(line).text);
  return docs;
}

// Deterministic CJK / emoji / astral strings that push a BPE model into byte fallback (mulberry32, fixed seed).
function cjkEmojiTexts() {
  let state = 20240611;
  const random = () => {
    state = (state + 0x6d2b79f5) | 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const ranges = [
    [0x4e00, 0x9fff], // CJK unified ideographs
    [0x3400, 0x4dbf], // extension A
    [0x20000, 0x2a6df], // extension B (astral)
    [0x3040, 0x30ff], // kana
    [0xac00, 0xd7a3], // Hangul syllables
    [0x1f300, 0x1f5ff], // pictographs
    [0x1f600, 0x1f64f], // emoticons
    [0x1f900, 0x1f9ff], // supplemental symbols
  ];
  const zwjSequences = ['👩‍👩‍👧‍👦', '🧑🏽‍💻', '🏳️‍🌈', '👨‍❤️‍💋‍👨', '🇯🇵', '1️⃣', '❤️', '🏴󠁧󠁢󠁳󠁣󠁴󠁿'];
  const texts = [];
  for (let n = 0; n < 300; n++) {
    let text = '';
    const length = 1 + Math.floor(random() * 40);
    for (let i = 0; i < length; i++) {
      const r = random();
      if (r < 0.1) text += ' ';
      else if (r < 0.15) text += zwjSequences[Math.floor(random() * zwjSequences.length)];
      else if (r < 0.2) text += 'abc xyz 123'[Math.floor(random() * 11)];
      else {
        const [lo, hi] = ranges[Math.floor(random() * ranges.length)];
        text += String.fromCodePoint(lo + Math.floor(random() * (hi - lo + 1)));
      }
    }
    texts.push(text);
  }
  return texts;
}

function fullCase(spp, text) {
  const ids = spp.encodeIds(text);
  return { text, ids, pieces: spp.encodePieces(text), decoded: spp.decodeIds(Int32Array.from(ids)) };
}

// Compact goldens for the corpus: per document the id count and 4-byte prefixes of the SHA-256 of its ids (int32 LE)
// and of its decoded text (UTF-8), plus SHA-256 over all documents' ids and decodes, so the whole set is checked
// strongly and a failing document can still be named.
function corpusGolden(spp, modelBytes, docs) {
  const chunks = [Buffer.from('SPMGOLD1'), sha256(modelBytes), varint(docs.length)];
  const allIds = crypto.createHash('sha256');
  const allDecoded = crypto.createHash('sha256');
  for (const doc of docs) {
    const ids = spp.encodeIds(doc);
    const idBytes = idsBytes(ids);
    const decoded = Buffer.from(spp.decodeIds(Int32Array.from(ids)), 'utf8');
    allIds.update(varint(ids.length)).update(idBytes);
    allDecoded.update(varint(decoded.length)).update(decoded);
    chunks.push(varint(ids.length), sha256(idBytes).subarray(0, 4), sha256(decoded).subarray(0, 4));
  }
  chunks.push(allIds.digest(), allDecoded.digest());
  return zlib.gzipSync(Buffer.concat(chunks), { level: 9 });
}

function writeJsonGz(file, value) {
  fs.writeFileSync(file, zlib.gzipSync(Buffer.from(JSON.stringify(value) + '\n', 'utf8'), { level: 9 }));
  console.log(`${path.relative(repo, file)}: ${fs.statSync(file).size} bytes`);
}

async function main() {
  const docs = corpusDocuments();
  const hard = JSON.parse(fs.readFileSync(path.join(here, 'hard-strings.json'), 'utf8'));
  const cjkEmoji = cjkEmojiTexts();
  const bigModels = [
    { name: 'albert-30k-clean', file: path.join(repo, 'Tests', 'Fixtures', 'Tokenizers', 'albert-30k-clean', 'spiece.model'), out: here },
    { name: 'mistral-7b-derived', file: path.join(modelsDir, 'mistral-7b-derived.model'), out: here },
  ];
  // A model that cannot be committed (Llama 2's tokenizer.model): its goldens go beside the models, not into the
  // fixtures; SentencePieceParityTests.Extra_model_encodes_and_decodes_as_SentencePiece_does reads them.
  const extra = process.env.SENTENCEPIECE_EXTRA_MODEL;
  if (extra) bigModels.push({ name: path.basename(extra, '.model'), file: extra, out: modelsDir });
  for (const model of bigModels) {
    const bytes = fs.readFileSync(model.file);
    const spp = await load(model.file);
    const corpus = path.join(model.out, `${model.name}.corpus.golden.bin.gz`);
    fs.writeFileSync(corpus, corpusGolden(spp, bytes, docs));
    console.log(`${path.relative(repo, corpus)}: ${docs.length} documents, ${fs.statSync(corpus).size} bytes`);
    writeJsonGz(path.join(model.out, `${model.name}.strings.golden.json.gz`), {
      model: model.name,
      sha256: sha256(bytes).toString('hex'),
      hard: hard.map((text) => fullCase(spp, text)),
      cjkEmoji: cjkEmoji.map((text) => fullCase(spp, text)),
    });
  }

  const tiny = [];
  for (const file of fs.readdirSync(modelsDir).filter((f) => f.endsWith('.texts.json')).sort()) {
    const name = file.slice(0, -'.texts.json'.length);
    if (name === 'mistral-7b-derived') continue;
    const modelFile = path.join(modelsDir, `${name}.model`);
    const bytes = fs.readFileSync(modelFile);
    const spp = await load(modelFile);
    const texts = JSON.parse(fs.readFileSync(path.join(modelsDir, file), 'utf8'));
    tiny.push({ model: name, sha256: sha256(bytes).toString('hex'), cases: texts.map((text) => fullCase(spp, text)) });
  }
  const tinyFile = path.join(here, 'tiny-models.golden.json');
  fs.writeFileSync(tinyFile, JSON.stringify(tiny, null, 1) + '\n');
  console.log(`${path.relative(repo, tinyFile)}: ${tiny.length} models, ${fs.statSync(tinyFile).size} bytes`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
