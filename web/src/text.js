// Tokenisation as nanoforge/runtime/text.py does it, on @huggingface/tokenizers (the same
// tokenizer.json, no padding or truncation of its own: rows are cut and padded here).
import { Tokenizer } from "@huggingface/tokenizers";
import { NanoError } from "./bundle.js";

export function loadTokenizer(bytes, where = "tokenizer.json") {
  let json;
  try {
    json = JSON.parse(new TextDecoder().decode(bytes));
  } catch (e) {
    throw new NanoError(`${where}: not valid JSON (${e.message})`);
  }
  json.padding = null;
  json.truncation = null;
  try {
    // clean_up_tokenization_spaces is a transformers setting: Python's `tokenizers` never applies it
    return new Tokenizer(json, { clean_up_tokenization_spaces: false });
  } catch (e) {
    throw new NanoError(`${where}: cannot load the tokenizer (${e.message})`);
  }
}

/** Token ids of `text` without special tokens. */
export function tokenIds(tok, text) {
  return tok.encode(text, { add_special_tokens: false }).ids;
}

/** [prefix, suffix]: the special tokens the post-processor puts around one sequence
 * (the empty string encoded with them: its first id is the prefix, the rest the suffix). */
export function specialTokens(tok) {
  const ids = tok.encode("", { add_special_tokens: true }).ids;
  return ids.length ? [ids.slice(0, 1), ids.slice(1)] : [[], []];
}

/** Encoder rows: prefix + ids cut to fit `maxLength` + suffix (Hugging Face truncation of a
 * single sequence: the end is dropped, the special tokens kept). */
export class TextEncoder {
  constructor(tok, maxLength) {
    this.tok = tok;
    this.maxLength = maxLength;
    [this.prefix, this.suffix] = specialTokens(tok);
  }

  ids(text) {
    const body = Math.max(0, this.maxLength - this.prefix.length - this.suffix.length);
    return [...this.prefix, ...tokenIds(this.tok, text).slice(0, body), ...this.suffix];
  }
}

/** (input_ids, attention_mask) as BigInt64Arrays, right-padded to the longest row. */
export function padRows(rows, padId) {
  const width = Math.max(...rows.map((r) => r.length));
  const ids = new BigInt64Array(rows.length * width).fill(BigInt(padId));
  const mask = new BigInt64Array(rows.length * width);
  rows.forEach((r, i) => {
    for (let j = 0; j < r.length; j++) {
      ids[i * width + j] = BigInt(r[j]);
      mask[i * width + j] = 1n;
    }
  });
  return { ids, mask, dims: [rows.length, width] };
}

// As nanoforge.runtime.text.CALL_COST_TOKENS: what one more model call costs, in padded tokens.
export const CALL_COST_TOKENS = 5.0;

/** Runs [start, end) of ascending `lengths`, at most `maxSize` long, minimising padded tokens
 * plus a call cost per run (nanoforge.runtime.text.length_groups, the same choices). */
export function lengthGroups(lengths, maxSize, callCost = CALL_COST_TOKENS) {
  const n = lengths.length;
  const best = [0, ...new Array(n).fill(Infinity)];
  const cut = new Array(n + 1).fill(0);
  for (let end = 1; end <= n; end++) {
    const width = lengths[end - 1];
    for (let start = Math.max(0, end - maxSize); start < end; start++) {
      const cost = best[start] + callCost + (end - start) * width;
      if (cost < best[end]) {
        best[end] = cost;
        cut[end] = start;
      }
    }
  }
  const runs = [];
  for (let end = n; end > 0; end = cut[end]) runs.push([cut[end], end]);
  return runs.reverse();
}

/** [row indices, rows] per batch, rows of similar length together (as length_batches). */
export function lengthBatches(rows, batchSize) {
  const order = rows.map((_, i) => i).sort((a, b) => rows[a].length - rows[b].length || a - b); // stable
  return lengthGroups(order.map((i) => rows[i].length), batchSize).map(([s, e]) => {
    const idx = order.slice(s, e);
    return [idx, idx.map((i) => rows[i])];
  });
}
