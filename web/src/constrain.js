// Schema-constrained JSON decoding (nanoforge/runtime/constrain.py, rule for rule): a token
// mask that lets a decoder write only compact JSON, keys in schema order, that parses and
// validates against the schema; `complete` closes a document cut by the token limit.

export const INVALID = 0, INCOMPLETE = 1, COMPLETE = 2;
const MAX_NUMBER_CHARS = 24;
const MAX_STRING_CHARS = 400;

class Incomplete extends Error {}
class Invalid extends Error {}
const isDigit = (c) => c !== undefined && c >= "0" && c <= "9";
const dumps = (v) => JSON.stringify(v);

function jsonType(v) {
  if (v === null) return "null";
  if (typeof v === "boolean") return "boolean";
  if (typeof v === "number") return "number";
  return "string";
}

function types(schema) {
  const t = schema.type;
  if (t === undefined && "enum" in schema) return [...new Set(schema.enum.map(jsonType))].sort();
  if (t === undefined && "properties" in schema) return ["object"];
  return typeof t === "string" ? [t] : [...(t ?? [])];
}

const YEAR_MIN = 1900, YEAR_MAX = 2099;
const dateCache = new Map();

/** The first real date "YYYY-MM-DD" that starts with `prefix`, or null. */
export function dateCompletion(prefix) {
  if (dateCache.has(prefix)) return dateCache.get(prefix);
  let out = null;
  if (prefix.length <= 4) {
    for (let y = YEAR_MIN; y <= YEAR_MAX; y++) if (String(y).startsWith(prefix)) { out = `${y}-01-01`; break; }
  } else if (/^\d{4}/.test(prefix) && +prefix.slice(0, 4) >= YEAR_MIN && +prefix.slice(0, 4) <= YEAR_MAX) {
    const y = +prefix.slice(0, 4);
    search: for (let m = 1; m <= 12; m++) {
      for (let d = 1; d <= 31; d++) {
        const t = new Date(Date.UTC(y, m - 1, d));
        if (t.getUTCMonth() !== m - 1) continue;
        const text = `${y}-${String(m).padStart(2, "0")}-${String(d).padStart(2, "0")}`;
        if (text.startsWith(prefix)) { out = text; break search; }
      }
    }
  }
  dateCache.set(prefix, out);
  return out;
}

class Parser {
  constructor(text) {
    this.s = text;
    this.n = text.length;
    this.openString = false; // the text ends inside a free string's content
  }

  lit(i, word) {
    const part = this.s.slice(i, i + word.length);
    if (part === word) return i + word.length;
    if (word.startsWith(part) && i + part.length === this.n) throw new Incomplete();
    throw new Invalid();
  }

  value(i, schema) {
    if (i >= this.n) throw new Incomplete();
    const ts = types(schema);
    const c = this.s[i];
    if ("enum" in schema) return this.enum(i, schema.enum);
    if (c === "n" && ts.includes("null")) return this.lit(i, "null");
    if (c === "{" && ts.includes("object")) return this.obj(i, schema);
    if (c === "[" && ts.includes("array")) return this.array(i, schema);
    if (c === '"' && ts.includes("string") && schema.format === "date") return this.date(i);
    if (c === '"' && ts.includes("string")) return this.string(i);
    if ((c === "t" || c === "f") && ts.includes("boolean")) return this.lit(i, c === "t" ? "true" : "false");
    if ((c === "-" || isDigit(c)) && (ts.includes("number") || ts.includes("integer"))) {
      return this.number(i, !ts.includes("number"));
    }
    throw new Invalid();
  }

  obj(i, schema) {
    i = this.lit(i, "{");
    Object.entries(schema.properties ?? {}).forEach(([name, sub], k) => {
      i = this.lit(i, (k ? "," : "") + dumps(name) + ":");
      i = this.value(i, sub);
    });
    return this.lit(i, "}");
  }

  array(i, schema) {
    i = this.lit(i, "[");
    const items = schema.items ?? {}, most = schema.maxItems ?? 64;
    if (i >= this.n) throw new Incomplete();
    if (this.s[i] === "]") return i + 1;
    let count = 0;
    for (;;) {
      i = this.value(i, items);
      count += 1;
      if (i >= this.n) throw new Incomplete();
      if (this.s[i] === "]") return i + 1;
      if (this.s[i] !== "," || count >= most) throw new Invalid();
      i += 1;
    }
  }

  string(i) {
    i = this.lit(i, '"');
    const start = i;
    while (i < this.n) {
      const c = this.s[i];
      if (c === '"') return i + 1;
      if (c === "\\") {
        if (i + 1 >= this.n) throw new Incomplete();
        const e = this.s[i + 1];
        if ('"\\/bfnrt'.includes(e)) { i += 2; continue; }
        if (e === "u") {
          const hex = this.s.slice(i + 2, i + 6);
          if (![...hex].every((h) => "0123456789abcdefABCDEF".includes(h))) throw new Invalid();
          if (hex.length < 4) throw new Incomplete();
          i += 6;
          continue;
        }
        throw new Invalid();
      }
      if (c.charCodeAt(0) < 0x20) throw new Invalid();
      i += 1;
      if (i - start > MAX_STRING_CHARS) throw new Invalid();
    }
    this.openString = true;
    throw new Incomplete();
  }

  date(i) {
    i = this.lit(i, '"');
    const body = this.s.slice(i, i + 10);
    if (dateCompletion(body) === null) throw new Invalid();
    if (body.length < 10 || i + 10 >= this.n) throw new Incomplete();
    return this.lit(i + 10, '"');
  }

  enum(i, options) {
    const words = options.map(dumps);
    const rest = this.s.slice(i);
    for (const w of [...words].sort((a, b) => b.length - a.length)) {
      if (rest.startsWith(w)) {
        const end = i + w.length; // a number enum must not run on into more digits
        if (isDigit(w[w.length - 1]) && end < this.n && (isDigit(this.s[end]) || ".eE".includes(this.s[end]))) continue;
        return end;
      }
    }
    if (words.some((w) => w.startsWith(rest))) throw new Incomplete();
    throw new Invalid();
  }

  digits(j) {
    if (j >= this.n) throw new Incomplete();
    if (!isDigit(this.s[j])) throw new Invalid();
    while (j < this.n && isDigit(this.s[j])) j++;
    return j;
  }

  number(i, integer) {
    let j = i;
    if (this.s[j] === "-") j++;
    if (j >= this.n) throw new Incomplete();
    if (this.s[j] === "0") j++;
    else if (isDigit(this.s[j])) while (j < this.n && isDigit(this.s[j])) j++;
    else throw new Invalid();
    if (!integer && j < this.n && this.s[j] === ".") j = this.digits(j + 1);
    if (!integer && j < this.n && "eE".includes(this.s[j])) {
      j++;
      if (j < this.n && "+-".includes(this.s[j])) j++;
      j = this.digits(j);
    }
    if (j - i > MAX_NUMBER_CHARS) throw new Invalid();
    if (j >= this.n) throw new Incomplete(); // more digits could follow
    return j;
  }
}

function parse(schema, text) {
  const p = new Parser(text);
  try {
    const end = p.value(0, schema);
    return [end === text.length ? COMPLETE : INVALID, false];
  } catch (e) {
    if (e instanceof Incomplete) return [INCOMPLETE, p.openString];
    if (e instanceof Invalid) return [INVALID, false];
    throw e;
  }
}

export const prefixState = (schema, text) => parse(schema, text)[0];

/** Vocabulary mask for one schema and one tokenizer (`pieces[t]`: the text token t adds;
 * "" for special tokens, never allowed). */
export class JsonConstraint {
  constructor(schema, pieces, eosIds) {
    this.schema = schema;
    this.pieces = pieces;
    this.eos = eosIds.filter((e) => e >= 0 && e < pieces.length);
    const eos = new Set(this.eos);
    this.byFirst = new Map();
    pieces.forEach((p, i) => {
      if (p && !eos.has(i)) {
        if (!this.byFirst.has(p[0])) this.byFirst.set(p[0], []);
        this.byFirst.get(p[0]).push(i);
      }
    });
    // Pieces that cannot end or break a string: inside a free string they are always fine.
    this.plain = pieces.map((p, i) => Boolean(p) && !eos.has(i) && ![...p].some((c) => c === '"' || c === "\\" || c.charCodeAt(0) < 0x20));
    this.special = pieces.map((p, i) => i).filter((i) => pieces[i] && !this.plain[i] && !eos.has(i));
  }

  allowed(text) {
    const mask = new Uint8Array(this.pieces.length);
    const [state, inString] = parse(this.schema, text);
    if (state === INVALID) return mask;
    if (state === COMPLETE) {
      for (const e of this.eos) mask[e] = 1;
      return mask;
    }
    if (inString) {
      this.plain.forEach((ok, i) => { if (ok) mask[i] = 1; });
      for (const t of this.special) if (prefixState(this.schema, text + this.pieces[t]) !== INVALID) mask[t] = 1;
      return mask;
    }
    for (const [first, ids] of this.byFirst) {
      if (prefixState(this.schema, text + first) === INVALID) continue;
      for (const t of ids) if (prefixState(this.schema, text + this.pieces[t]) !== INVALID) mask[t] = 1;
    }
    return mask;
  }
}

/** The smallest valid value: null where allowed, else "", 0, false, the first enum option,
 * an empty array, or an object of defaults. */
export function defaultValue(schema) {
  if ("enum" in schema) return schema.enum[0];
  const ts = types(schema);
  if (ts.includes("null")) return null;
  const t = ts[0];
  if (t === "string" && schema.format === "date") return "2000-01-01";
  if (t === "object") return Object.fromEntries(Object.entries(schema.properties ?? {}).map(([k, s]) => [k, defaultValue(s)]));
  return { string: "", number: 0, integer: 0, boolean: false, array: [] }[t];
}

/** The parser, but running out of text appends the shortest valid continuation. */
class Completer extends Parser {
  extend(more) {
    this.s += more;
    this.n = this.s.length;
  }

  lit(i, word) {
    const part = this.s.slice(i, i + word.length);
    if (word.startsWith(part) && i + part.length === this.n && part !== word) this.extend(word.slice(part.length));
    return super.lit(i, word);
  }

  value(i, schema) {
    if (i >= this.n) this.extend(dumps(defaultValue(schema)));
    return super.value(i, schema);
  }

  string(i) {
    try {
      return super.string(i);
    } catch (e) {
      if (!(e instanceof Incomplete)) throw e;
      const tail = this.s.slice(i);
      const slashes = tail.length - tail.replace(/\\+$/, "").length;
      if (tail.endsWith("\\") && slashes % 2 === 1) this.extend("\\");
      else if (tail.slice(-5).includes("\\u") && !tail.endsWith('"')) {
        const k = tail.lastIndexOf("\\u");
        this.extend("0".repeat(6 - (tail.length - k)));
      }
      this.extend('"');
      return super.string(i);
    }
  }

  date(i) {
    try {
      return super.date(i);
    } catch (e) {
      if (!(e instanceof Incomplete)) throw e;
      const body = this.s.slice(i + 1);
      this.extend(dateCompletion(body).slice(body.length) + '"');
      return super.date(i);
    }
  }

  enum(i, options) {
    try {
      return super.enum(i, options);
    } catch (e) {
      if (!(e instanceof Incomplete)) throw e;
      const rest = this.s.slice(i);
      const word = options.map(dumps).find((w) => w.startsWith(rest));
      this.extend(word.slice(rest.length));
      return super.enum(i, options);
    }
  }

  number(i, integer) {
    try {
      return super.number(i, integer);
    } catch (e) {
      if (!(e instanceof Incomplete)) throw e;
      if (!isDigit(this.s[this.s.length - 1])) this.extend("0");
      let j = i;
      while (j < this.n && (isDigit(this.s[j]) || "-+.eE".includes(this.s[j]))) j++;
      return j;
    }
  }

  array(i, schema) {
    try {
      return super.array(i, schema);
    } catch (e) {
      if (!(e instanceof Incomplete)) throw e;
      if (this.s.endsWith(",")) {
        this.s = this.s.slice(0, -1);
        this.n -= 1;
      }
      if (prefixState(schema, this.s.slice(i) + "]") === COMPLETE) {
        this.extend("]");
        return this.n;
      }
      throw e;
    }
  }
}

/** `text` closed into a valid document (the answer when the token budget ran out). */
export function complete(schema, text) {
  const state = prefixState(schema, text);
  if (state === COMPLETE) return text;
  if (state === INCOMPLETE) {
    const c = new Completer(text);
    try {
      const end = c.value(0, schema);
      if (end === c.n && prefixState(schema, c.s) === COMPLETE) return c.s;
    } catch (e) {
      if (!(e instanceof Incomplete || e instanceof Invalid || e instanceof TypeError)) throw e;
    }
  }
  return dumps(defaultValue(schema));
}

/** One row's answer text as its tokens add up, and the mask for its next token. */
export class ConstrainedText {
  constructor(constraint, stripFirst) {
    this.c = constraint;
    this.text = "";
    this.first = stripFirst
      ? new JsonConstraint(constraint.schema, constraint.pieces.map((p) => (p.startsWith(" ") ? p.slice(1) : p)), constraint.eos)
      : constraint;
  }

  mask(nTokens) {
    return (nTokens === 0 ? this.first : this.c).allowed(this.text);
  }

  add(token, nBefore) {
    this.text += (nBefore === 0 ? this.first : this.c).pieces[token];
  }
}
