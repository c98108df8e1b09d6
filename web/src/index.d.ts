// Types of @nanoforge/web. The answer objects are those of docs/BUNDLE.md ("Answers").

export class NanoError extends Error {}

export interface LoadOptions {
  /** WASM threads (default 1, or up to 4 when the page is cross-origin isolated). */
  threads?: number;
  /** Where onnxruntime-web's ort-wasm-*.wasm / .mjs files are served (never a CDN). */
  wasmPaths?: string | { mjs?: string; wasm?: string };
  /** A fetch function (default: globalThis.fetch). */
  fetch?: (url: string) => Promise<Response>;
  /** Check every file's size and sha256 against the manifest (default true). */
  verify?: boolean;
}

export interface ClassifyAnswer {
  output: string | null;
  confidence: number | null;
  out_of_scope: boolean;
  score: number | null;
}

export interface ExtractAnswer {
  /** Every schema field: its typed value (ISO date, number, enum spelling) or null. */
  output: Record<string, string | number | null>;
  confidence: Record<string, number>;
  /** Whether output validates against the strict schema. */
  valid: boolean;
}

export interface GenerateAnswer {
  output: string;
  confidence: number | null;
  tokens: number;
  finish: "eos" | "length" | "stop";
  truncated: boolean;
}

export interface GenerateOptions {
  maxNewTokens?: number;
  /** 0 (default): greedy. */
  temperature?: number;
  topP?: number;
  seed?: number | null;
  stop?: string[] | null;
}

interface NanoBase {
  url: string;
  manifest: Record<string, unknown>;
  name: string;
  version: string;
  kind: "classify" | "extract" | "translate" | "summarize";
  threads: number;
}

export interface ClassifierNano extends NanoBase {
  labels: string[];
  predict(text: string): Promise<ClassifyAnswer>;
  predictBatch(texts: string[], options?: { batchSize?: number }): Promise<ClassifyAnswer[]>;
}

export interface TaggerNano extends NanoBase {
  predict(text: string): Promise<ExtractAnswer>;
  predictBatch(texts: string[], options?: { batchSize?: number }): Promise<ExtractAnswer[]>;
}

export interface DecoderNano extends NanoBase {
  predict(text: string, options?: GenerateOptions): Promise<GenerateAnswer>;
  predictBatch(texts: string[], options?: GenerateOptions): Promise<GenerateAnswer[]>;
  stream(text: string, options?: GenerateOptions): AsyncGenerator<string>;
}

export type Nano = ClassifierNano | TaggerNano | DecoderNano;

export function load(source: string | URL, options?: LoadOptions): Promise<Nano>;
