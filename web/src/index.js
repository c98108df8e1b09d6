// @nanoforge/web: run a nanoforge bundle in the browser (or Node) on onnxruntime-web.
//
//   import { load } from "@nanoforge/web";
//   const nano = await load("/nanos/clinc150/");   // manifest.json, every file's sha256 checked
//   await nano.predict("what's my checking balance");
//
// The answers are those of the Python runtime (nanoforge.runtime) on the same input.
import { NanoError, readBundle } from "./bundle.js";
import { ClassifierNano } from "./classifier.js";
import { DecoderNano } from "./decoder.js";
import { configure, startRuntime } from "./session.js";
import { TaggerNano } from "./tagger.js";

export { NanoError } from "./bundle.js";

const RUNTIMES = {
  [ClassifierNano.runtime]: ClassifierNano, [TaggerNano.runtime]: TaggerNano, [DecoderNano.runtime]: DecoderNano,
};

/**
 * Load the bundle at `source` (a folder URL). Options: `threads` (WASM threads; default 1,
 * or up to 4 when the page is cross-origin isolated), `wasmPaths` (where onnxruntime-web's
 * .wasm/.mjs files are served), `fetch` (a fetch function, e.g. for files on disk in Node),
 * `verify` (default true: check every file's size and sha256).
 */
export async function load(source, options = {}) {
  const threads = configure(options);
  const t0 = performance.now();
  const runtimeReady = startRuntime(); // WASM download + compile, while the bundle downloads
  runtimeReady.catch(() => {}); // awaited below; a bundle error is reported first
  const bundle = await readBundle(source, options);
  await runtimeReady;
  const t1 = performance.now();
  const runtime = RUNTIMES[bundle.manifest.model.runtime];
  if (!runtime) {
    throw new NanoError(`${bundle.url}manifest.json: model.runtime ${bundle.manifest.model.runtime} is not supported ` +
      `by this SDK version yet (it runs ${Object.keys(RUNTIMES).join(", ")})`);
  }
  const nano = await runtime.create(bundle);
  nano.threads = threads;
  // where a cold start goes: download + checksums beside the WASM runtime's start, then the
  // bundle's session and tokenizer
  nano.loadTiming = { fetchVerifyStartMs: t1 - t0, createMs: performance.now() - t1 };
  return nano;
}
