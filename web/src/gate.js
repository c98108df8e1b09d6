// The out-of-scope gate (nanoforge/runtime/gate.py): a score per input, higher = more in
// scope, accepted when >= the bundle's calibrated threshold.
import { NanoError } from "./bundle.js";

/** Softmax of one row of logits (a Float32Array slice or an array). */
export function softmax(row) {
  let m = -Infinity;
  for (const v of row) m = Math.max(m, v);
  const e = Array.from(row, (v) => Math.exp(v - m));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / s);
}

export function logsumexp(row) {
  let m = -Infinity;
  for (const v of row) m = Math.max(m, v);
  let s = 0;
  for (const v of row) s += Math.exp(v - m);
  return m + Math.log(s);
}

export class Gate {
  /** @param params {means: {shape, data}, precision: {shape, data}} for mahalanobis */
  constructor(method, threshold, params = {}) {
    if (!["msp", "energy", "mahalanobis"].includes(method)) throw new NanoError(`gate: unknown method ${method}`);
    this.method = method;
    this.threshold = threshold;
    if (method === "mahalanobis") {
      if (!params.means || !params.precision) throw new NanoError("gate: the mahalanobis gate needs `means` and `precision`");
      this.means = params.means;
      this.precision = params.precision;
      const [c, d] = params.means.shape;
      // The parts of d2 = x'Px - 2 x'Pm + m'Pm that do not depend on the input, once.
      this.mp = new Float64Array(c * d); // (C, d): means @ precision
      this.mpm = new Float64Array(c);
      const P = params.precision.data, M = params.means.data;
      for (let k = 0; k < c; k++) {
        for (let j = 0; j < d; j++) {
          let s = 0;
          for (let i = 0; i < d; i++) s += M[k * d + i] * P[i * d + j];
          this.mp[k * d + j] = s;
          this.mpm[k] += s * M[k * d + j];
        }
      }
    }
  }

  /** The score of one input from its logits row and pooled row. */
  score(logits, pooled) {
    if (this.method === "msp") return Math.max(...softmax(logits));
    if (this.method === "energy") return logsumexp(logits);
    const [c, d] = this.means.shape;
    const P = this.precision.data;
    let xpx = 0;
    for (let j = 0; j < d; j++) {
      let s = 0;
      for (let i = 0; i < d; i++) s += pooled[i] * P[i * d + j];
      xpx += s * pooled[j];
    }
    let best = Infinity;
    for (let k = 0; k < c; k++) {
      let xpm = 0;
      for (let j = 0; j < d; j++) xpm += pooled[j] * this.mp[k * d + j];
      best = Math.min(best, xpx - 2 * xpm + this.mpm[k]);
    }
    return -best;
  }

  accepts(score) {
    return score >= this.threshold;
  }
}
