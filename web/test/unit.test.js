// Unit tests of the SDK's pure parts (node --test): no model needed.
import assert from "node:assert/strict";
import { test } from "node:test";
import { NanoError, checkText, readBundle, sha256 } from "../src/bundle.js";
import { DecoderNano, pick, rng } from "../src/decoder.js";
import { Gate, logsumexp, softmax } from "../src/gate.js";
import { readSafetensors } from "../src/safetensors.js";
import { lengthBatches, lengthGroups, loadTokenizer, padRows } from "../src/text.js";

function safetensors(tensors) {
  let offset = 0;
  const header = {};
  for (const [name, { shape, data }] of Object.entries(tensors)) {
    header[name] = { dtype: "F32", shape, data_offsets: [offset, offset + 4 * data.length] };
    offset += 4 * data.length;
  }
  const h = new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(8 + h.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(h.length), true);
  out.set(h, 8);
  let at = 8 + h.length;
  for (const { data } of Object.values(tensors)) {
    out.set(new Uint8Array(Float32Array.from(data).buffer), at);
    at += 4 * data.length;
  }
  return out;
}

test("safetensors round trip, and a truncated file is a NanoError", () => {
  const bytes = safetensors({ means: { shape: [2, 2], data: [1, 2, 3, 4] }, precision: { shape: [1], data: [5] } });
  const t = readSafetensors(bytes);
  assert.deepEqual(t.means.shape, [2, 2]);
  assert.deepEqual(Array.from(t.means.data), [1, 2, 3, 4]);
  assert.deepEqual(Array.from(t.precision.data), [5]);
  assert.throws(() => readSafetensors(bytes.subarray(0, 20)), NanoError);
});

test("gate scores: msp, energy and mahalanobis by their definitions", () => {
  const logits = [1, 3, 0.5];
  assert.ok(Math.abs(new Gate("msp", 0).score(logits) - Math.max(...softmax(logits))) < 1e-12);
  assert.ok(Math.abs(new Gate("energy", 0).score(logits) - Math.log(Math.exp(1) + Math.exp(3) + Math.exp(0.5))) < 1e-12);
  // two classes in 2-d, precision diag(1, 4): d2 to m0=(0,0) is 1 + 4*1 = 5, to m1=(1,1) is 0 + 4*0 = 0... at x=(1,1)
  const g = new Gate("mahalanobis", -1, {
    means: { shape: [2, 2], data: Float32Array.from([0, 0, 1, 1]) },
    precision: { shape: [2, 2], data: Float32Array.from([1, 0, 0, 4]) },
  });
  assert.ok(Math.abs(g.score(logits, [1, 1]) - 0) < 1e-9);
  assert.ok(Math.abs(g.score(logits, [0, 1]) - -1) < 1e-9); // to m1: 1; to m0: 4
  assert.equal(g.accepts(-1), true);
  assert.equal(g.accepts(-1.5), false);
  assert.throws(() => new Gate("cosine", 0), NanoError);
});

test("length groups: the same runs as nanoforge.runtime.text.length_groups", () => {
  // from Python: length_groups([3, 3, 4, 9, 30], 16) == [(0, 3), (3, 4), (4, 5)]
  assert.deepEqual(lengthGroups([3, 3, 4, 9, 30], 16), [[0, 3], [3, 4], [4, 5]]);
  assert.deepEqual(lengthGroups([5, 5, 5], 2), [[0, 1], [1, 3]]);
  const rows = [[1, 2, 3], [1], [1, 2], [1]];
  const batches = lengthBatches(rows, 16);
  assert.deepEqual(batches.flatMap(([idx]) => idx).sort(), [0, 1, 2, 3]);
  assert.deepEqual(batches[0][0].slice(0, 2), [1, 3]); // shortest first, stable
});

test("rows are right-padded with pad_id and masked", () => {
  const { ids, mask, dims } = padRows([[5, 6, 7], [8]], 0);
  assert.deepEqual(dims, [2, 3]);
  assert.deepEqual(Array.from(ids, Number), [5, 6, 7, 8, 0, 0]);
  assert.deepEqual(Array.from(mask, Number), [1, 1, 1, 1, 0, 0]);
});

test("inputs: empty, not a string, or over 100,000 characters are NanoErrors naming the input", () => {
  assert.throws(() => checkText("   "), /input: `input` is empty/);
  assert.throws(() => checkText(7), /must be a string/);
  assert.throws(() => checkText("x".repeat(100_001)), /100,001 characters, over the limit of 100,000/);
  assert.equal(checkText("hello"), "hello");
});

test("sampling: greedy is argmax; a seed repeats; top-p 0 keeps only the likeliest", () => {
  const row = Float32Array.from([0.1, 2.0, 1.9, -1]);
  assert.equal(pick(row, {}, Math.random), 1);
  const a = rng(7), b = rng(7);
  const draws = (r) => Array.from({ length: 20 }, () => pick(row, { temperature: 1.5, topP: 0.95 }, r));
  assert.deepEqual(draws(a), draws(b));
  assert.ok(draws(rng(3)).some((t) => t !== 1));
  const r = rng(2);
  assert.deepEqual(new Set(Array.from({ length: 20 }, () => pick(row, { temperature: 1, topP: 0 }, r))), new Set([1]));
});

test("a decoder that ends at once (EOS first) answers the empty string, as the Python runtime does", () => {
  const json = { version: "1.0", added_tokens: [{ id: 0, content: "</s>", single_word: false, lstrip: false,
    rstrip: false, normalized: false, special: true }], normalizer: null, pre_tokenizer: { type: "Whitespace" },
    post_processor: null, decoder: null, model: { type: "WordLevel", vocab: { "</s>": 0, hello: 1, world: 2 }, unk_token: "</s>" } };
  const tok = loadTokenizer(new TextEncoder().encode(JSON.stringify(json)));
  const decode = (ids) => DecoderNano.prototype.decode.call({ tok }, ids);
  assert.equal(decode([]), "");
  assert.equal(decode([0]), "");
  assert.equal(decode([1, 2, 0]), "hello world");
});

async function fakeBundle(files, manifest) {
  const entries = {};
  for (const [name, bytes] of Object.entries(files)) entries[name] = { sha256: await sha256(bytes), bytes: bytes.length };
  const m = { format_version: 2, name: "t", version: "1.0.0", kind: "classify", task: {},
    model: { runtime: "encoder-classifier", file: "model.onnx", tokenizer: "tokenizer.json", gate: null },
    files: entries, ...manifest };
  const all = { "manifest.json": new TextEncoder().encode(JSON.stringify(m)), ...files };
  return async (url) => {
    const name = url.split("/").pop();
    return name in all ? new Response(all[name]) : new Response(null, { status: 404 });
  };
}

test("a bundle: verified files load; a tampered file, a missing file, a new format or a network error throw", async () => {
  const files = { "model.onnx": new Uint8Array([1, 2, 3]), "tokenizer.json": new TextEncoder().encode("{}") };
  const ok = await readBundle("http://x/b", { fetch: await fakeBundle(files) });
  assert.equal(ok.url, "http://x/b/");
  assert.deepEqual(Array.from(ok.files.get("model.onnx")), [1, 2, 3]);

  const honest = await fakeBundle(files);
  const tampered = async (url) => (url.endsWith("model.onnx") ? new Response(new Uint8Array([1, 2, 4])) : honest(url));
  await assert.rejects(readBundle("http://x/b/", { fetch: tampered }), /model.onnx: sha256 checksum mismatch/);
  const short = async (url) => (url.endsWith("model.onnx") ? new Response(new Uint8Array([1, 2])) : honest(url));
  await assert.rejects(readBundle("http://x/b/", { fetch: short }), /2 bytes, the manifest lists 3/);
  const missing = async (url) => (url.endsWith("tokenizer.json") ? new Response(null, { status: 404 }) : honest(url));
  await assert.rejects(readBundle("http://x/b/", { fetch: missing }), /tokenizer.json: cannot fetch tokenizer.json \(HTTP 404\)/);
  await assert.rejects(readBundle("http://x/b/", { fetch: await fakeBundle(files, { format_version: 3 }) }),
    /format_version 3 is not supported/);
  const offline = async () => { throw new TypeError("Failed to fetch"); };
  await assert.rejects(readBundle("http://x/b/", { fetch: offline }), /cannot fetch the manifest \(Failed to fetch\)/);
  const unlisted = await fakeBundle({ "model.onnx": files["model.onnx"] });
  await assert.rejects(readBundle("http://x/b/", { fetch: unlisted }), /names tokenizer.json, which `files` does not list/);
});

test("logsumexp is stable for large logits", () => {
  assert.ok(Math.abs(logsumexp([1000, 1000]) - (1000 + Math.log(2))) < 1e-9);
});
