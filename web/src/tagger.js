// An `encoder-tagger` bundle (docs/BUNDLE.md): a long document -> a JSON object of the
// schema's fields, read from BIO-tagged token runs in overlapping windows
// (nanoforge/runtime/tagging.py, rule for rule).
import { Nano, NanoError, checkText, checkTexts } from "./bundle.js";
import { softmax } from "./gate.js";
import { bind, int64, makeSession } from "./session.js";
import { loadTokenizer, padRows, specialTokens, tokenIds } from "./text.js";
import { normaliseValue } from "./values.js";

/** The schema's fields in order: {name, type, enum, required, nullable}. */
export function schemaFields(schema) {
  const required = new Set(schema.required ?? []);
  return Object.entries(schema.properties).map(([name, spec]) => {
    let s = { ...spec };
    let nullable = s.nullable === true;
    const alt = s.anyOf ?? s.oneOf;
    if (alt) {
      s = { ...s, ...alt.find((o) => o.type !== "null") };
      nullable = true;
    }
    if (Array.isArray(s.type)) {
      nullable = nullable || s.type.includes("null");
      s.type = s.type.find((t) => t !== "null");
    }
    let type = s.type;
    let values = null;
    if (s.enum) {
      type = "enum";
      nullable = nullable || s.enum.includes(null);
      values = [...new Set(s.enum.filter((v) => v !== null))];
    } else if (type === "string" && s.format === "date") type = "date";
    return { name, type, enum: values, required: required.has(name), nullable };
  });
}

/** The strict form of the fields (nanoforge.extract.schema.Schema.json_schema): every key
 * required, optional ones nullable; what constrained decoding follows. */
export function strictSchema(fields) {
  const properties = {};
  for (const f of fields) {
    const nullable = f.nullable || !f.required;
    const base = f.type === "enum" || f.type === "date" ? "string" : f.type;
    const prop = { type: nullable ? [base, "null"] : base };
    if (f.type === "date") prop.format = "date";
    if (f.type === "enum") prop.enum = [...f.enum, ...(nullable ? [null] : [])];
    properties[f.name] = prop;
  }
  return { type: "object", properties, required: fields.map((f) => f.name), additionalProperties: false };
}

function isIsoDate(v) {
  if (!/^\d{4}-\d{2}-\d{2}$/.test(v)) return false;
  const [y, m, d] = v.split("-").map(Number);
  const t = new Date(Date.UTC(y, m - 1, d));
  return y >= 1900 && y <= 2099 && t.getUTCMonth() === m - 1 && t.getUTCDate() === d;
}

/** Whether `obj` satisfies the strict schema (every key; null only where allowed; typed). */
export function isValid(fields, obj) {
  return fields.every((f) => {
    const v = obj[f.name];
    if (v === null || v === undefined) return v === null && (f.nullable || !f.required);
    if (f.type === "string") return typeof v === "string";
    if (f.type === "number") return typeof v === "number" && Number.isFinite(v);
    if (f.type === "integer") return Number.isInteger(v);
    if (f.type === "date") return typeof v === "string" && isIsoDate(v);
    return f.enum.includes(v);
  });
}

/** Token ids and character offsets of a document (no special tokens), from the
 * tokenizer's own normalizer, pre-tokenizer and WordPiece model: the ids are checked
 * against a plain encode, so an offset can never be silently wrong. */
export function tokensWithOffsets(tok, text) {
  const norm = [];
  const origin = []; // normalised index -> [start, end) in text
  for (let i = 0; i < text.length;) {
    const c = String.fromCodePoint(text.codePointAt(i));
    const n = tok.normalizer ? tok.normalizer.normalize(c) : c;
    for (let k = 0; k < n.length; k++) origin.push([i, i + c.length]);
    norm.push(n);
    i += c.length;
  }
  const normalised = norm.join("");
  const words = tok.pre_tokenizer ? tok.pre_tokenizer.pre_tokenize_text(normalised) : [normalised];
  const ids = [];
  const offsets = [];
  let cursor = 0;
  for (const word of words) {
    const at = normalised.indexOf(word, cursor);
    if (at < 0) throw new NanoError("tokenizer: cannot place a word of the document (unsupported normalizer)");
    cursor = at + word.length;
    const enc = tok.encode(word, { add_special_tokens: false });
    let k = at;
    enc.tokens.forEach((t, j) => {
      const unk = tok.model?.unk_token === t && enc.tokens.length === 1;
      const len = unk ? word.length : (t.startsWith("##") ? t.length - 2 : t.length);
      const a = Math.min(k, at + word.length - 1), b = Math.min(k + len, at + word.length);
      ids.push(enc.ids[j]);
      offsets.push([origin[a][0], origin[Math.max(a, b - 1)][1]]);
      k += len;
    });
  }
  const plain = tokenIds(tok, text);
  if (plain.length !== ids.length || plain.some((v, i) => v !== ids[i])) {
    throw new NanoError("tokenizer: the browser tagger reads WordPiece tokenizers with a BERT normalizer and " +
      "pre-tokenizer (as every encoder nanoforge trains); this bundle's tokenizer is another kind");
  }
  return { ids, offsets };
}

const NUMBER_CHARS = new Set("0123456789.,");

export class TaggerNano extends Nano {
  static runtime = "encoder-tagger";

  static async create(bundle) {
    const nano = new TaggerNano(bundle);
    const s = nano.section;
    nano.tok = loadTokenizer(...nano.file(s.tokenizer));
    [nano.prefix, nano.suffix] = specialTokens(nano.tok);
    nano.body = s.max_length - nano.prefix.length - nano.suffix.length;
    nano.stride = Math.min(s.stride, Math.floor(nano.body / 2));
    nano.padId = s.pad_id;
    nano.fields = schemaFields(s.schema);
    nano.tags = s.tags;
    nano.thresholds = s.thresholds;
    nano.call = bind(await makeSession(...nano.file(s.file)), s.graph);
    return nano;
  }

  document(text) {
    const { ids, offsets } = tokensWithOffsets(this.tok, text);
    const windows = [];
    const step = this.body - this.stride;
    for (let start = 0; ; start += step) {
      const end = Math.min(start + this.body, ids.length);
      windows.push([start, end]);
      if (end >= ids.length) break;
    }
    return { text, ids, offsets, windows };
  }

  /** Tag probabilities of every document token: each from the window where it is most central. */
  async probs(docs, batchSize = 16) {
    const rows = [];
    docs.forEach((doc, d) => doc.windows.forEach(([s, e]) => rows.push({ d, s, e, ids: [...this.prefix, ...doc.ids.slice(s, e), ...this.suffix] })));
    const order = rows.map((_, i) => i).sort((a, b) => rows[a].ids.length - rows[b].ids.length || a - b);
    const nTags = this.tags.length;
    const out = docs.map((doc) => ({ p: new Array(doc.ids.length).fill(null), best: new Array(doc.ids.length).fill(-1) }));
    for (let k = 0; k < order.length; k += batchSize) {
      const batch = order.slice(k, k + batchSize).map((i) => rows[i]);
      const { ids, mask, dims } = padRows(batch.map((r) => r.ids), this.padId);
      const [logits] = await this.call(int64(ids, dims), int64(mask, dims));
      const width = dims[1];
      batch.forEach((r, j) => {
        const o = out[r.d];
        for (let t = r.s; t < r.e; t++) {
          const centrality = Math.min(t - r.s, r.e - 1 - t);
          if (centrality > o.best[t]) {
            const at = (j * width + this.prefix.length + t - r.s) * nTags;
            o.p[t] = softmax(logits.data.subarray(at, at + nTags));
            o.best[t] = centrality;
          }
        }
      });
    }
    return out.map((o) => o.p);
  }

  read(doc, start, end, field) {
    const a = doc.offsets[start][0], b = doc.offsets[end - 1][1];
    const numeric = field.type === "number" || field.type === "integer";
    const inside = numeric ? (c) => NUMBER_CHARS.has(c) : (c) => !/\s/.test(c);
    let wa = a, wb = b;
    while (wa > 0 && inside(doc.text[wa - 1])) wa--;
    while (wb < doc.text.length && inside(doc.text[wb])) wb++;
    let value = normaliseValue(field, doc.text.slice(wa, wb));
    if (value === null && (wa !== a || wb !== b)) value = normaliseValue(field, doc.text.slice(a, b));
    return value;
  }

  firstReadable(doc, candidates, field) {
    for (const [score, start, end] of candidates) {
      const v = this.read(doc, start, end, field);
      if (v !== null) return [v, score];
    }
    return [null, 0];
  }

  decode(doc, probs) {
    const top = probs.map((p) => p.indexOf(Math.max(...p)));
    const output = {}, confidence = {};
    for (const f of this.fields) {
      const b = this.tags.indexOf(`B-${f.name}`), i = this.tags.indexOf(`I-${f.name}`);
      const floor = f.required && !f.nullable ? 0 : this.thresholds[f.name] ?? null;
      // runs tagged B (or a stray I) followed by I's, best mean P(B) + P(I) first
      const runs = [];
      for (let k = 0; k < top.length;) {
        if (top[k] === b || top[k] === i) {
          const start = k++;
          while (k < top.length && top[k] === i) k++;
          let s = 0;
          for (let t = start; t < k; t++) s += probs[t][b] + probs[t][i];
          runs.push([s / (k - start), start, k]);
        } else k++;
      }
      runs.sort((x, y) => y[0] - x[0]);
      let [value, conf] = this.firstReadable(doc, runs, f);
      if (value === null && floor !== null && probs.length) {
        const forced = [];
        const order = probs.map((_, t) => t).sort((x, y) => probs[y][b] - probs[x][b] || x - y);
        for (const start of order) {
          if (probs[start][b] < floor) break;
          let end = start + 1;
          while (end < probs.length && probs[end][i] >= probs[end][b] && probs[end][i] > 0.1) end++;
          forced.push([probs[start][b], start, end]);
        }
        [value, conf] = this.firstReadable(doc, forced, f);
      }
      if (value === null && probs.length) conf = 1 - Math.max(...probs.map((p) => p[b]));
      output[f.name] = value;
      confidence[f.name] = Math.round(conf * 1e4) / 1e4;
    }
    return { output, confidence, valid: isValid(this.fields, output) };
  }

  async predict(text) {
    checkText(text);
    return (await this.predictBatch([text]))[0];
  }

  async predictBatch(texts, { batchSize = 16 } = {}) {
    checkTexts(texts);
    const docs = texts.map((t) => this.document(t));
    const probs = await this.probs(docs, batchSize);
    return docs.map((doc, k) => this.decode(doc, probs[k]));
  }
}
