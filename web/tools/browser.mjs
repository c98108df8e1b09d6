// Drive a nanoforge web page in headless Chromium (Debian's, through playwright-core):
// the browser side of the parity tests and of bench/web.py.
//   node tools/browser.mjs URL < request.json   ->  stdout: {"answers", "loadMs", "requests", ...}
// request: {"inputs": [...], "batch": bool, "options": {...}, "screenshot": PATH, "type": TEXT,
//           "timeMs": [texts...] (per-call latency, after one warm-up call)}
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
  "--disable-component-update", "--disable-sync", "--no-first-run"];

const chunks = [];
for await (const c of process.stdin) chunks.push(c);
const req = JSON.parse(Buffer.concat(chunks).toString("utf8") || "{}");
const profile = mkdtempSync(join(tmpdir(), "nanoforge-chromium-"));
const browser = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium", args: ARGS, headless: true,
});
try {
  const page = browser.pages()[0] ?? await browser.newPage();
  const requests = [];
  page.on("request", (r) => requests.push(r.url()));
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  const t0 = Date.now();
  await page.goto(process.argv[2]);
  await page.waitForFunction(() => window.nanoforge || document.getElementById("status")?.textContent.startsWith("cannot"),
    null, { timeout: 120_000 });
  const status = await page.textContent("#status");
  const out = { status, requests, errors, loadMs: Date.now() - t0 };
  if (await page.evaluate(() => !window.nanoforge)) {
    process.stdout.write(JSON.stringify(out));
    process.exit(0);
  }
  out.pageLoadMs = await page.evaluate(() => window.nanoforge.loadMs);
  out.loadTiming = await page.evaluate(() => window.nanoforge.nano.loadTiming);
  if (req.first) { // the first answer of a fresh page: cold start ends here
    out.firstAnswerMs = await page.evaluate(async (text) => {
      const s = performance.now();
      await window.nanoforge.nano.predict(text);
      return performance.now() - s;
    }, req.first);
    out.toFirstAnswerMs = Date.now() - t0;
  }
  out.threads = await page.evaluate(() => window.nanoforge.nano.threads);
  out.isolated = await page.evaluate(() => crossOriginIsolated);
  if (req.inputs) {
    out.answers = await page.evaluate(async ({ inputs, batch, options }) => {
      if (batch) return window.nanoforge.predictBatch(inputs, options);
      const answers = [];
      for (const t of inputs) answers.push(await window.nanoforge.nano.predict(t, options));
      return answers;
    }, req);
  }
  if (req.timeMs) {
    out.latencyMs = await page.evaluate(async (texts) => {
      await window.nanoforge.nano.predict(texts[0]);
      const ms = [];
      for (const t of texts) {
        const s = performance.now();
        await window.nanoforge.nano.predict(t);
        ms.push(performance.now() - s);
      }
      return ms;
    }, req.timeMs);
  }
  if (req.type) {
    await page.fill("#text", req.type);
    await page.click("#go");
    await page.waitForFunction(() => document.getElementById("detail").textContent.includes("ms"));
    out.shown = { answer: await page.textContent("#answer"), detail: await page.textContent("#detail") };
  }
  if (req.screenshot) await page.screenshot({ path: req.screenshot, fullPage: true });
  process.stdout.write(JSON.stringify(out));
} finally {
  await browser.close();
  rmSync(profile, { recursive: true, force: true });
}
