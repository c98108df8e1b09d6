// onnxruntime-web's own per-operator profile of an encoder bundle's model, on one WASM thread in
// Node (the WASM build the SDK ships): p50 of 200 unprofiled calls on one query of LENGTH tokens,
// then each operator's share of 100 profiled calls.
//   node bench/web_profile.mjs runs/demo/bundle/model.onnx [LENGTH]
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import * as ort from "../web/node_modules/onnxruntime-web/dist/ort.node.min.mjs";

ort.env.wasm.numThreads = 1;
const trace = process.argv[2] === "--trace";  // the child run: the profiled calls, whose trace the WASM build prints
const [file, length = "14"] = process.argv.slice(trace ? 3 : 2);
const L = Number(length);
const ids = new BigInt64Array(L).fill(1000n);
ids[0] = 101n;
ids[L - 1] = 102n;
const feeds = {
  input_ids: new ort.Tensor("int64", ids, [1, L]),
  attention_mask: new ort.Tensor("int64", new BigInt64Array(L).fill(1n), [1, L]),
};

async function p50(session, n) {
  for (let i = 0; i < 30; i++) await session.run(feeds);
  const ts = [];
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    await session.run(feeds);
    ts.push(performance.now() - t);
  }
  return ts.sort((a, b) => a - b)[n >> 1];
}

const model = readFileSync(file);
if (trace) {
  const profiled = await ort.InferenceSession.create(model, {
    executionProviders: ["wasm"], graphOptimizationLevel: "all", enableProfiling: true });
  await p50(profiled, 100);
  profiled.endProfiling();
  process.exit(0);
}
const plain = await ort.InferenceSession.create(model, { executionProviders: ["wasm"], graphOptimizationLevel: "all" });
console.log(`p50 ${(await p50(plain, 200)).toFixed(2)} ms (1 thread, ${L} tokens)`);
await plain.release();

const text = execFileSync(process.execPath, [fileURLToPath(import.meta.url), "--trace", file, length],
                          { encoding: "utf8", maxBuffer: 1 << 28 });
const events = JSON.parse(text.slice(text.indexOf("["), text.lastIndexOf("]") + 1));
const runs = events.filter((e) => e.name === "model_run");
const since = runs[runs.length - 100].ts;
const byOp = new Map();
for (const e of events) {
  if (e.cat !== "Node" || !e.name.endsWith("kernel_time") || e.ts < since) continue;
  byOp.set(e.args.op_name, (byOp.get(e.args.op_name) ?? 0) + e.dur);
}
const total = [...byOp.values()].reduce((a, b) => a + b, 0);
for (const [op, us] of [...byOp].sort((a, b) => b[1] - a[1]).slice(0, 12))
  console.log(`${op.padEnd(26)} ${(us / 100).toFixed(1).padStart(8)} us/call ${(100 * us / total).toFixed(1).padStart(5)}%`);
