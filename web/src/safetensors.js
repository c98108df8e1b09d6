// The safetensors format: an 8-byte little-endian header length, a JSON header naming each
// tensor's dtype, shape and byte range, then the data. Only what a bundle holds (F32).
import { NanoError } from "./bundle.js";

export function readSafetensors(bytes, where = "safetensors") {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes.byteLength < 8) throw new NanoError(`${where}: too short for a safetensors file`);
  const n = Number(view.getBigUint64(0, true));
  if (8 + n > bytes.byteLength) throw new NanoError(`${where}: header length ${n} runs past the file`);
  let header;
  try {
    header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
  } catch (e) {
    throw new NanoError(`${where}: header is not valid JSON (${e.message})`);
  }
  const tensors = {};
  for (const [name, t] of Object.entries(header)) {
    if (name === "__metadata__") continue;
    if (t.dtype !== "F32") throw new NanoError(`${where}: tensor ${name} is ${t.dtype}, not F32`);
    const [start, end] = t.data_offsets;
    const count = t.shape.reduce((a, b) => a * b, 1);
    if (end - start !== 4 * count || 8 + n + end > bytes.byteLength) {
      throw new NanoError(`${where}: tensor ${name}: byte range does not match its shape`);
    }
    const data = new Float32Array(count);
    new Uint8Array(data.buffer).set(bytes.subarray(8 + n + start, 8 + n + end));
    tensors[name] = { shape: t.shape, data };
  }
  return tensors;
}
