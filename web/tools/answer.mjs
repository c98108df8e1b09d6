// Answer inputs with a bundle on disk, as the SDK does in a browser: the parity check's
// JS side (tests/test_web.py). Usage: node tools/answer.mjs BUNDLE_DIR < request.json
//   request: {"inputs": [...], "batch": bool, "options": {...}}  ->  stdout: [answers...]
// A NanoError is printed as {"error": message} with exit code 2.
import { pathToFileURL } from "node:url";
import { load, NanoError } from "../src/index.js";
import { fsFetch } from "./fs-fetch.js";

const chunks = [];
for await (const c of process.stdin) chunks.push(c);
const req = JSON.parse(Buffer.concat(chunks).toString("utf8") || "{}");
try {
  const nano = await load(pathToFileURL(process.argv[2]).href, { fetch: fsFetch, threads: 1 });
  let out;
  if (req.stream) {
    out = [];
    for (const text of req.inputs) {
      const pieces = [];
      for await (const p of nano.stream(text, req.options ?? {})) pieces.push(p);
      out.push(pieces);
    }
  } else if (req.batch) out = await nano.predictBatch(req.inputs, req.options ?? {});
  else {
    out = [];
    for (const text of req.inputs) out.push(await nano.predict(text, req.options ?? {}));
  }
  process.stdout.write(JSON.stringify(out));
} catch (e) {
  if (!(e instanceof NanoError)) throw e;
  process.stdout.write(JSON.stringify({ error: e.message }));
  process.exitCode = 2;
}
