// Reading a bundle (docs/BUNDLE.md): the manifest, then every file it names, each checked
// against its listed size and sha256 (WebCrypto) before anything uses it.

export const FORMAT_VERSION = 2;
export const RUNTIMES = ["encoder-classifier", "encoder-tagger", "decoder"];
export const MAX_INPUT_CHARS = 100_000; // as nanoforge.data.MAX_INPUT_CHARS

/** Every error the SDK throws for a bad bundle, a bad input or a failed download. */
export class NanoError extends Error {
  constructor(message) {
    super(message);
    this.name = "NanoError";
  }
}

export function hex(buffer) {
  return Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, "0")).join("");
}

export async function sha256(bytes) {
  return hex(await globalThis.crypto.subtle.digest("SHA-256", bytes));
}

function folderUrl(source) {
  const s = String(source);
  return s.endsWith("/") ? s : s + "/";
}

async function get(fetchFn, url, what) {
  let res;
  try {
    res = await fetchFn(url);
  } catch (e) {
    throw new NanoError(`${url}: cannot fetch ${what} (${e?.message ?? e})`);
  }
  if (!res.ok) throw new NanoError(`${url}: cannot fetch ${what} (HTTP ${res.status})`);
  return res;
}

/** The files a model section names, for its runtime. */
export function namedFiles(model) {
  const names = [model.file, model.tokenizer];
  if (model.runtime === "encoder-classifier" && model.gate?.file) names.push(model.gate.file);
  return names;
}

function checkManifest(m, url) {
  const where = `${url}manifest.json`;
  if (m === null || typeof m !== "object" || Array.isArray(m)) throw new NanoError(`${where}: not a JSON object`);
  if (m.format_version !== FORMAT_VERSION) {
    throw new NanoError(`${where}: format_version ${JSON.stringify(m.format_version)} is not supported ` +
      `(this SDK reads format ${FORMAT_VERSION}; re-bundle with a current nanoforge)`);
  }
  for (const key of ["name", "version", "kind", "task", "model", "files"]) {
    if (!(key in m)) throw new NanoError(`${where}: missing key \`${key}\``);
  }
  if (!RUNTIMES.includes(m.model.runtime)) {
    throw new NanoError(`${where}: model.runtime ${JSON.stringify(m.model.runtime)} is not one of ${RUNTIMES.join(", ")}`);
  }
  for (const name of namedFiles(m.model)) {
    if (!(name in m.files)) throw new NanoError(`${where}: model names ${name}, which \`files\` does not list`);
  }
}

/**
 * The manifest and the named files' bytes (verified), from a bundle folder URL.
 * @returns {Promise<{url: string, manifest: object, files: Map<string, Uint8Array>}>}
 */
export async function readBundle(source, { fetch: fetchFn = globalThis.fetch.bind(globalThis), verify = true } = {}) {
  const url = folderUrl(source);
  const res = await get(fetchFn, url + "manifest.json", "the manifest");
  let manifest;
  try {
    manifest = JSON.parse(await res.text());
  } catch (e) {
    throw new NanoError(`${url}manifest.json: not valid JSON (${e.message})`);
  }
  checkManifest(manifest, url);
  const files = new Map();
  await Promise.all(namedFiles(manifest.model).map(async (name) => {
    const entry = manifest.files[name];
    const bytes = new Uint8Array(await (await get(fetchFn, url + name, name)).arrayBuffer());
    if (verify) {
      if (bytes.byteLength !== entry.bytes) {
        throw new NanoError(`${url}${name}: ${bytes.byteLength} bytes, the manifest lists ${entry.bytes} (file truncated or modified)`);
      }
      if ((await sha256(bytes)) !== entry.sha256) {
        throw new NanoError(`${url}${name}: sha256 checksum mismatch (file modified or corrupted)`);
      }
    }
    files.set(name, bytes);
  }));
  return { url, manifest, files };
}

/** Check one input as the Python runtime does (nanoforge.data.check_text). */
export function checkText(text, where = "input") {
  if (typeof text !== "string") throw new NanoError(`${where}: \`input\` must be a string, got ${text === null ? "null" : typeof text}`);
  if (!text.trim()) throw new NanoError(`${where}: \`input\` is empty`);
  const chars = text.length > MAX_INPUT_CHARS ? [...text].length : text.length; // code points, as Python counts
  if (chars > MAX_INPUT_CHARS) {
    throw new NanoError(`${where}: \`input\` is ${chars.toLocaleString("en-US")} characters, over the limit of ` +
      `${MAX_INPUT_CHARS.toLocaleString("en-US")}`);
  }
  return text;
}

export function checkTexts(texts) {
  if (!Array.isArray(texts)) throw new NanoError("inputs: must be an array of strings");
  texts.forEach((t, i) => checkText(t, texts.length > 1 ? `input ${i}` : "input"));
}

/** What every runtime class shares: the bundle it came from, its name, version and kind,
 * and its model section's tokenizer and ONNX bytes. */
export class Nano {
  constructor({ url, manifest, files }) {
    Object.assign(this, { url, manifest, name: manifest.name, version: manifest.version, kind: manifest.kind });
    this.section = manifest.model;
    this.files = files;
  }

  file(name) {
    return [this.files.get(name), this.url + name];
  }
}
