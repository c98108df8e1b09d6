// fetch for file:// URLs in Node (bundles on disk), with a 404 for a missing file.
import { readFile } from "node:fs/promises";

export async function fsFetch(url) {
  try {
    return new Response(await readFile(new URL(url)));
  } catch (e) {
    if (e.code === "ENOENT") return new Response(null, { status: 404 });
    throw e;
  }
}
