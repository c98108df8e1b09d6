// Token ids and character offsets of texts as the browser tagger computes them:
//   node tools/offsets.mjs TOKENIZER.json < texts.json  ->  [{"ids": [...], "offsets": [[a, b], ...]}, ...]
// (offsets in UTF-16 code units; the same as Python's for text in the BMP).
import { readFileSync } from "node:fs";
import { tokensWithOffsets } from "../src/tagger.js";
import { loadTokenizer } from "../src/text.js";

const chunks = [];
for await (const c of process.stdin) chunks.push(c);
const tok = loadTokenizer(readFileSync(process.argv[2]));
process.stdout.write(JSON.stringify(JSON.parse(Buffer.concat(chunks).toString("utf8")).map((t) => tokensWithOffsets(tok, t))));
