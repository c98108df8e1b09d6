// onnxruntime-web sessions (WASM backend), fed and read by the names the bundle's
// `model.graph` declares (docs/BUNDLE.md), never by position.
import * as ort from "onnxruntime-web";
import { NanoError } from "./bundle.js";

export { ort };

/** Threads for the WASM backend: the caller's choice, else 2+ only where the page is
 * cross-origin isolated (SharedArrayBuffer), else 1. Set once, before the first session. */
export function configure({ threads, wasmPaths } = {}) {
  const isolated = globalThis.crossOriginIsolated === true;
  const cores = globalThis.navigator?.hardwareConcurrency ?? 1;
  if (!configure.done) {
    ort.env.wasm.numThreads = threads ?? (isolated ? Math.min(4, cores) : 1);
    if (wasmPaths) ort.env.wasm.wasmPaths = wasmPaths;
    configure.done = true;
  }
  return ort.env.wasm.numThreads;
}

// A 70-byte ONNX graph (y = Identity(x)): creating a session on it starts onnxruntime-web's
// WASM runtime (download, compile, instantiate), which load() overlaps with the bundle's download.
const IDENTITY_ONNX = "CAgSADo6ChAKAXgSAXkiCElkZW50aXR5EgR3YXJtWg8KAXgSCgoICAESBAoCCAFiDwoBeRIKCggIARIECgIIAUIECgAQDQ==";

/** Start the WASM runtime now; resolves once it is ready (or throws a NanoError). */
export async function startRuntime() {
  const bytes = Uint8Array.from(atob(IDENTITY_ONNX), (c) => c.charCodeAt(0));
  try {
    await (await ort.InferenceSession.create(bytes, { executionProviders: ["wasm"] })).release();
  } catch (e) {
    throw new NanoError(`cannot start onnxruntime-web's WASM runtime (${String(e?.message ?? e).split("\n")[0].slice(0, 200)}); ` +
      "are its .wasm/.mjs files served where `wasmPaths` says?");
  }
}

export async function makeSession(bytes, where) {
  try {
    return await ort.InferenceSession.create(bytes, { executionProviders: ["wasm"], graphOptimizationLevel: "all" });
  } catch (e) {
    throw new NanoError(`${where}: cannot load ONNX model (${String(e?.message ?? e).split("\n")[0].slice(0, 200)})`);
  }
}

/** f(...tensors) -> outputs in the graph's order. */
export function bind(session, graph) {
  const inputs = graph.inputs.map((t) => t.name);
  const outputs = graph.outputs.map((t) => t.name);
  return async (...tensors) => {
    const feeds = Object.fromEntries(inputs.map((name, i) => [name, tensors[i]]));
    const res = await session.run(feeds);
    return outputs.map((name) => res[name]);
  };
}

export const int64 = (data, dims) => new ort.Tensor("int64", data, dims);
export const float32 = (data, dims) => new ort.Tensor("float32", data, dims);
