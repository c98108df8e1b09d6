// An `encoder-classifier` bundle (docs/BUNDLE.md): text -> one of `labels`, or out of scope.
import { Nano, checkText, checkTexts } from "./bundle.js";
import { Gate, softmax } from "./gate.js";
import { readSafetensors } from "./safetensors.js";
import { bind, int64, makeSession } from "./session.js";
import { TextEncoder, lengthBatches, loadTokenizer, padRows } from "./text.js";

export class ClassifierNano extends Nano {
  static runtime = "encoder-classifier";

  static async create(bundle) {
    const nano = new ClassifierNano(bundle);
    const s = nano.section;
    nano.labels = [...s.labels];
    nano.encoder = new TextEncoder(loadTokenizer(...nano.file(s.tokenizer)), s.max_length);
    nano.padId = s.pad_id;
    nano.call = bind(await makeSession(...nano.file(s.file)), s.graph);
    nano.gate = null;
    if (s.gate) {
      const params = s.gate.file ? readSafetensors(...nano.file(s.gate.file)) : {};
      nano.gate = new Gate(s.gate.method, s.gate.threshold, params);
    }
    return nano;
  }

  async forward(rows) {
    const { ids, mask, dims } = padRows(rows, this.padId);
    const [logits, pooled] = await this.call(int64(ids, dims), int64(mask, dims));
    return { logits: logits.data, pooled: pooled.data, labels: logits.dims[1], hidden: pooled.dims[1] };
  }

  decide({ logits, pooled, labels, hidden }, n) {
    const out = [];
    for (let i = 0; i < n; i++) {
      const row = logits.subarray(i * labels, (i + 1) * labels);
      const p = softmax(row);
      let top = 0;
      for (let j = 1; j < p.length; j++) if (p[j] > p[top]) top = j;
      if (!this.gate) {
        out.push({ output: this.labels[top], confidence: p[top], out_of_scope: false, score: null });
        continue;
      }
      const score = this.gate.score(row, pooled.subarray(i * hidden, (i + 1) * hidden));
      out.push(this.gate.accepts(score)
        ? { output: this.labels[top], confidence: p[top], out_of_scope: false, score }
        : { output: null, confidence: null, out_of_scope: true, score });
    }
    return out;
  }

  async predict(text) {
    checkText(text);
    return this.decide(await this.forward([this.encoder.ids(text)]), 1)[0];
  }

  /** Answers in input order; texts run in batches of similar token length, exactly as the
   * Python runtime batches them (so dynamic INT8 sees the same batches). */
  async predictBatch(texts, { batchSize = 16 } = {}) {
    checkTexts(texts);
    const out = new Array(texts.length);
    for (const [idx, rows] of lengthBatches(texts.map((t) => this.encoder.ids(t)), batchSize)) {
      this.decide(await this.forward(rows), rows.length).forEach((a, k) => { out[idx[k]] = a; });
    }
    return out;
  }
}
