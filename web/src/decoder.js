// A `decoder` bundle (docs/BUNDLE.md): prefill, then one token a step with the KV cache
// fed back; greedy or temperature / top-p sampling; stop strings; streaming.
import { Nano, checkText, checkTexts } from "./bundle.js";
import { ConstrainedText, JsonConstraint, complete } from "./constrain.js";
import { bind, float32, int64, makeSession } from "./session.js";
import { isValid, schemaFields, strictSchema } from "./tagger.js";
import { loadTokenizer, tokenIds } from "./text.js";

/** A small seeded PRNG (mulberry32): the same seed gives the same samples in this SDK.
 * (Python's numpy generator differs: sampled text matches only under greedy decoding.) */
export function rng(seed) {
  if (seed === null || seed === undefined) return Math.random;
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function argmax(row) {
  let best = 0;
  for (let j = 1; j < row.length; j++) if (row[j] > row[best]) best = j;
  return best;
}

/** Next token of one row of logits (as nanoforge.runtime.generation._pick). */
export function pick(row, { temperature = 0, topP = 1 }, random) {
  if (!(temperature > 0)) return argmax(row);
  let m = -Infinity;
  for (const v of row) m = Math.max(m, v / temperature);
  const p = Array.from(row, (v) => Math.exp(v / temperature - m));
  const sum = p.reduce((a, b) => a + b, 0);
  // The draw walks the kept tokens in id order (as _pick: engines rank near-equal tokens differently).
  let keep = p.map((_, i) => i);
  if (topP < 1) {
    const order = [...keep].sort((a, b) => p[b] - p[a] || a - b);
    keep = [];
    let cum = 0;
    for (const i of order) {
      keep.push(i);
      cum += p[i] / sum;
      if (cum >= topP) break;
    }
    keep.sort((a, b) => a - b);
  }
  const mass = keep.reduce((a, i) => a + p[i], 0);
  let r = random() * mass;
  for (const i of keep) {
    r -= p[i];
    if (r <= 0) return i;
  }
  return keep[keep.length - 1];
}

function logsumexp(row) {
  let m = -Infinity;
  for (const v of row) m = Math.max(m, v);
  let s = 0;
  for (const v of row) s += Math.exp(v - m);
  return m + Math.log(s);
}

function cutAtStop(text, stop) {
  if (!stop?.length) return [text, false];
  const hits = stop.filter((s) => s && text.includes(s)).map((s) => text.indexOf(s));
  if (!hits.length) return [text, false];
  return [text.slice(0, Math.min(...hits)).trimEnd(), true];
}

export class Generator {
  constructor(call, { eosIds, padId, layers, kvHeads, headDim }) {
    Object.assign(this, { call, eos: new Set(eosIds), padId, layers, kvHeads, headDim });
  }

  /** Yields, per step, each row's new token id (null once the row has finished); with
   * `logprobs` (one array per row) each new token's log-probability is appended;
   * `allowed(row, idsSoFar)` may return a vocabulary mask (constrained decoding): a row
   * whose mask allows nothing finishes. */
  async *generate(prompts, maxNewTokens, sampling = {}, logprobs = null, allowed = null) {
    const random = rng(sampling.seed);
    const b = prompts.length;
    const width = Math.max(...prompts.map((p) => p.length));
    let ids = new BigInt64Array(b * width).fill(BigInt(this.padId));
    let mask = [];
    let pos = [];
    prompts.forEach((p, r) => {
      const row = new Array(width).fill(0);
      p.forEach((t, j) => { ids[r * width + width - p.length + j] = BigInt(t); row[width - p.length + j] = 1; });
      mask.push(row);
      let c = 0;
      pos.push(row.map((m) => Math.max((c += m) - 1, 0)));
    });
    let seq = width;
    let pastK = float32(new Float32Array(0), [this.layers, b, this.kvHeads, 0, this.headDim]);
    let pastV = pastK;
    const done = new Array(b).fill(false);
    const produced = prompts.map(() => []);
    for (let step = 0; step < maxNewTokens; step++) {
      const total = mask[0].length;
      const [logits, presentK, presentV] = await this.call(
        int64(ids, [b, seq]), int64(BigInt64Array.from(mask.flat(), BigInt), [b, total]),
        int64(BigInt64Array.from(pos.flat(), BigInt), [b, seq]), pastK, pastV);
      const vocab = logits.dims[2];
      const out = [];
      const next = [];
      for (let r = 0; r < b; r++) {
        let last = logits.data.subarray(((r + 1) * seq - 1) * vocab, (r + 1) * seq * vocab);
        if (!done[r] && allowed) {
          const ok = allowed(r, produced[r]);
          if (ok) {
            if (!ok.some(Boolean)) done[r] = true;
            last = last.map((v, t) => (ok[t] ? v : -Infinity));
          }
        }
        if (done[r]) { out.push(null); next.push(this.padId); continue; }
        const tok = pick(last, sampling, random);
        if (this.eos.has(tok)) {
          done[r] = true;
          out.push(null);
          next.push(this.padId);
        } else {
          out.push(tok);
          next.push(tok);
          produced[r].push(tok);
          if (logprobs) logprobs[r].push(last[tok] - logsumexp(last));
        }
      }
      yield out;
      if (done.every(Boolean)) return;
      ids = BigInt64Array.from(next, BigInt);
      seq = 1;
      mask = mask.map((row) => [...row, 1]);
      pos = pos.map((row) => [row[row.length - 1] + 1]);
      pastK = presentK;
      pastV = presentV;
    }
  }
}

/** [text of each token id, whether an answer's first piece loses one leading space]
 * (nanoforge.runtime.decoder.token_pieces); special tokens get "" so the constraint never allows them. */
export function tokenPieces(tok, bytes) {
  const decoder = JSON.parse(new TextDecoder().decode(bytes)).decoder?.type;
  const special = new Set(tok.get_added_tokens_decoder().keys());
  const size = Math.max(...tok.get_vocab(true).values()) + 1;
  const pieces = [];
  for (let i = 0; i < size; i++) {
    if (special.has(i)) pieces.push("");
    else if (decoder === "Metaspace") pieces.push((tok.id_to_token(i) ?? "").replaceAll("\u2581", " "));
    else pieces.push(tok.decode([i], { skip_special_tokens: false }));
  }
  return [pieces, decoder === "Metaspace"];
}

export class DecoderNano extends Nano {
  static runtime = "decoder";

  static async create(bundle) {
    const nano = new DecoderNano(bundle);
    const s = nano.section;
    nano.layout = s.prompt;
    nano.maxInputTokens = s.max_input_tokens;
    nano.maxNewTokens = s.max_new_tokens;
    nano.tok = loadTokenizer(...nano.file(s.tokenizer));
    const call = bind(await makeSession(...nano.file(s.file)), s.graph);
    nano.generator = new Generator(call, {
      eosIds: s.prompt.eos_ids, padId: s.prompt.pad_id, layers: s.cache.layers, kvHeads: s.cache.kv_heads,
      headDim: s.cache.head_dim,
    });
    nano.constraint = null;
    if (s.schema) { // JSON under the schema, by construction
      nano.fields = schemaFields(s.schema);
      const [pieces, stripFirst] = tokenPieces(nano.tok, nano.files.get(s.tokenizer));
      nano.constraint = new JsonConstraint(strictSchema(nano.fields), pieces, s.prompt.eos_ids);
      nano.stripFirst = stripFirst;
    }
    return nano;
  }

  /** [prompt ids, truncated]: the input cut to max_input_tokens, wrapped in the prompt. */
  prompt(text) {
    const ids = tokenIds(this.tok, text);
    const { prefix_ids: prefix, suffix_ids: suffix } = this.layout;
    return [[...prefix, ...ids.slice(0, this.maxInputTokens), ...suffix], ids.length > this.maxInputTokens];
  }

  decode(ids) { // the tokenizer refuses an empty list: a first-step EOS is the empty answer
    return ids.length ? this.tok.decode(ids, { skip_special_tokens: true }).trim() : "";
  }

  async predict(text, options = {}) {
    checkText(text);
    return (await this.predictBatch([text], options))[0];
  }

  /** One answer per text: output, confidence, tokens, finish (eos / length / stop), truncated. */
  async predictBatch(texts, { maxNewTokens, temperature = 0, topP = 1, seed = null, stop = null } = {}) {
    checkTexts(texts);
    if (!texts.length) return [];
    const prompts = texts.map((t) => this.prompt(t));
    const ids = texts.map(() => []);
    const logprobs = texts.map(() => []);
    const finish = texts.map(() => "length");
    let steps = 0;
    const rows = this.constraint ? texts.map(() => new ConstrainedText(this.constraint, this.stripFirst)) : null;
    const allowed = rows ? (r, done) => rows[r].mask(done.length) : null;
    for await (const step of this.generator.generate(prompts.map(([p]) => p), maxNewTokens ?? this.maxNewTokens,
      { temperature, topP, seed }, logprobs, allowed)) {
      steps += 1;
      step.forEach((tok, r) => {
        if (tok === null) {
          if (finish[r] === "length" && ids[r].length < steps) finish[r] = "eos";
        } else {
          if (rows) rows[r].add(tok, ids[r].length);
          ids[r].push(tok);
        }
      });
    }
    return prompts.map(([, truncated], r) => {
      const lp = logprobs[r];
      const confidence = lp.length ? Math.exp(lp.reduce((a, b) => a + b, 0) / lp.length) : null;
      if (rows) { // closed if the token limit cut it, so it still validates
        const output = JSON.parse(complete(this.constraint.schema, rows[r].text));
        return { output, valid: isValid(this.fields, output), confidence, tokens: ids[r].length, finish: finish[r], truncated };
      }
      const [text, stopped] = cutAtStop(this.decode(ids[r]), stop);
      return { output: text, confidence, tokens: ids[r].length, finish: stopped ? "stop" : finish[r], truncated };
    });
  }

  /** The answer in pieces as it is generated; joined, they equal predict()'s output. */
  async *stream(text, { maxNewTokens, temperature = 0, topP = 1, seed = null, stop = null } = {}) {
    checkText(text);
    const [prompt] = this.prompt(text);
    const ids = [];
    let shown = "";
    for await (const [tok] of this.generator.generate([prompt], maxNewTokens ?? this.maxNewTokens,
      { temperature, topP, seed })) {
      if (tok === null) break;
      ids.push(tok);
      let now = this.decode(ids);
      if (now.endsWith("\ufffd")) continue; // half of a multi-byte character: wait for the rest
      let stopped;
      [now, stopped] = cutAtStop(now, stop);
      if (now.startsWith(shown) && now.length > shown.length) {
        yield now.slice(shown.length);
        shown = now;
      }
      if (stopped) return;
    }
    const [final] = cutAtStop(this.decode(ids), stop);
    if (final.startsWith(shown) && final.length > shown.length) yield final.slice(shown.length);
  }
}
