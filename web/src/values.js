// Reading written values into a schema field's typed form, as nanoforge/extract/values.py
// does: strings with whitespace collapsed, amounts to numbers, written dates to ISO
// YYYY-MM-DD (day first when ambiguous), enums matched case-insensitively.

const WS = /\s+/g;
export const normaliseText = (text) => text.replace(WS, " ").trim();

const CURRENCY_CODES = "RM MYR USD SGD EUR GBP JPY CNY RMB HKD AUD NZD CAD CHF INR IDR PHP THB VND KRW TWD ZAR AED SAR RP RS KR R";
const CURRENCY = `(?:[A-Z]{0,2}[$€£¥₹₩฿₱₫]|(?:${CURRENCY_CODES.split(" ").join("|")})(?![A-Z])\\.?)`;
const NUMBER = new RegExp(
  `^(?:(?<open>\\()?\\s*(?<sign>[-+−])?\\s*(?:${CURRENCY}\\s*)?(?<sign2>[-+−])?\\s*` +
  `(?<body>\\d[\\d.,']*|[.,]\\d+)` +
  `\\s*(?:${CURRENCY})?\\s*(?<tail>-)?\\s*(?<close>\\))?)$`, "i");

function grouped(whole, sep) {
  if (!whole.includes(sep)) return /^\d+$/.test(whole);
  const s = sep === "." ? "\\." : sep;
  return new RegExp(`^\\d{1,3}(?:${s}\\d{3})+$`).test(whole);
}

function rpartition(s, sep) {
  const i = s.lastIndexOf(sep);
  return i < 0 ? ["", s] : [s.slice(0, i), s.slice(i + 1)];
}

function numberBody(body) {
  const seps = [...body].filter((c) => c === "." || c === ",");
  if (!seps.length) return body;
  if (seps.includes(".") && seps.includes(",")) {
    const dec = body[Math.max(body.lastIndexOf("."), body.lastIndexOf(","))];
    const thousands = dec === "." ? "," : ".";
    const [whole, frac] = rpartition(body, dec);
    if (frac.includes(thousands) || whole.includes(dec) || !grouped(whole, thousands)) return null;
    return whole.split(thousands).join("") + "." + frac;
  }
  const sep = seps[0];
  const [whole, frac] = rpartition(body, sep);
  if (seps.length === 1) {
    if (sep === "." || frac.length === 1 || frac.length === 2) return (whole || "0") + "." + frac;
    return frac.length === 3 && whole ? body.split(",").join("") : null;
  }
  return grouped(body, sep) ? body.split(sep).join("") : null;
}

/** A written amount ("1,234.50", "RM 9.00", "9,00", "-0.02", "(1.00)") as a number, or null. */
export function parseNumber(text) {
  const m = NUMBER.exec(text.trim());
  if (!m || Boolean(m.groups.open) !== Boolean(m.groups.close)) return null;
  const body = numberBody(m.groups.body.replaceAll("'", ","));
  if (body === null) return null;
  const value = Number(body);
  if (Number.isNaN(value)) return null;
  const g = m.groups;
  const negative = ["-", "−"].includes(g.sign) || ["-", "−"].includes(g.sign2) || g.tail || g.open;
  return negative ? -value : value;
}

const MONTHS = { JAN: 1, FEB: 2, MAR: 3, APR: 4, MAY: 5, JUN: 6, JUL: 7, AUG: 8, SEP: 9, OCT: 10, NOV: 11, DEC: 12 };
const MON = "(?<![A-Z])(?<mon>JAN(?:UARY)?|FEB(?:RUARY)?|MAR(?:CH)?|APR(?:IL)?|MAY|JUNE?|JULY?|" +
  "AUG(?:UST)?|SEPT?(?:EMBER)?|OCT(?:OBER)?|NOV(?:EMBER)?|DEC(?:EMBER)?)(?![A-Z])\\.?";
const D = "(?<d>\\d{1,2})(?:ST|ND|RD|TH)?";
const Y = "(?<y>\\d{4}|\\d{2})";
const NUM_SEP = "\\s*(?<s>[/\\-.])\\s*";
const DATE_PATTERNS = [
  "(?<!\\d)(?<y>\\d{4})" + NUM_SEP + "(?<m>\\d{1,2})\\s*\\k<s>\\s*(?<d>\\d{1,2})(?!\\d)",
  "(?<!\\d)(?<a>\\d{1,2})" + NUM_SEP + "(?<b>\\d{1,2})\\s*\\k<s>\\s*(?<y>\\d{4}|\\d{2})(?!\\d)",
  "(?<!\\d)" + D + "\\s*[-/ .,]?\\s*" + MON + "\\s*[-/ .,]?\\s*" + Y + "(?!\\d)",
  MON + "\\s*[-/ .]?\\s*" + D + "(?:\\s*[,/.-]\\s*|\\s+)" + Y + "(?!\\d)",
  "(?<!\\d)(?<y>\\d{4})\\s*[-/ ]?\\s*" + MON + "\\s*[-/ ]?\\s*(?<d>\\d{1,2})(?!\\d)",
  "(?<!\\d)(?<compact>\\d{8})(?!\\d)",
].map((p) => new RegExp(`^(?:${p})$`, "i"));
const TIME_TAIL = /(?:\s*(?:T|\s)\s*\d{1,2}[:.]\d{2}(?:[:.]\d{2})?(?:\.\d+)?\s*(?:[AP]\.?M\.?)?(?:\s*(?:Z|[+-]\d{2}:?\d{2}))?)?\s*$/i;
const WEEKDAY = /^\s*(?:MON|TUE|WED|THU|FRI|SAT|SUN)[A-Z]*\.?,?\s+/i;

const year = (y) => (y.length === 2 ? 2000 + Number(y) : Number(y));

function iso(y, m, d) {
  if (!(y >= 1900 && y <= 2099) || !(m >= 1 && m <= 12) || d < 1) return null;
  const t = new Date(Date.UTC(y, m - 1, d));
  if (t.getUTCMonth() !== m - 1 || t.getUTCDate() !== d) return null;
  return `${String(y).padStart(4, "0")}-${String(m).padStart(2, "0")}-${String(d).padStart(2, "0")}`;
}

function compactDate(digits, dayfirst) {
  if (["19", "20"].includes(digits.slice(0, 2))) {
    const ymd = iso(Number(digits.slice(0, 4)), Number(digits.slice(4, 6)), Number(digits.slice(6)));
    if (ymd) return ymd;
  }
  const first = Number(digits.slice(0, 2)), second = Number(digits.slice(2, 4)), y = Number(digits.slice(4));
  return dayfirst ? iso(y, second, first) ?? iso(y, first, second) : iso(y, first, second) ?? iso(y, second, first);
}

function dateFromMatch(g, dayfirst) {
  if (g.compact) return compactDate(g.compact, dayfirst);
  if (g.mon) return iso(year(g.y), MONTHS[g.mon.slice(0, 3).toUpperCase()], Number(g.d));
  if (g.m) return iso(Number(g.y), Number(g.m), Number(g.d));
  const a = Number(g.a), b = Number(g.b);
  if (g.y.length === 2 && a > 31) return iso(year(g.a), b, Number(g.y)); // "18-12-25": year first
  if (a > 12 || (dayfirst && b <= 12)) return iso(year(g.y), b, a); // day first
  return iso(year(g.y), a, b);
}

/** A written date ("25/12/2018", "Dec 25, 2018", "25DEC2018", "12-01-19 21:13") as ISO, or null. */
export function parseDate(text, dayfirst = true) {
  const core = text.trim().replace(WEEKDAY, "").replace(TIME_TAIL, "");
  for (const p of DATE_PATTERNS) {
    const m = p.exec(core);
    if (m) return dateFromMatch(m.groups, dayfirst);
  }
  return null;
}

/** The typed value of `text` for `field` ({type, enum}); null when absent or unreadable. */
export function normaliseValue(field, text) {
  if (typeof text !== "string" || !text.trim()) return null;
  if (field.type === "string") return normaliseText(text);
  if (field.type === "number" || field.type === "integer") {
    const n = parseNumber(text);
    if (n === null || !Number.isFinite(n)) return null;
    if (field.type === "integer") return Number.isInteger(n) ? n : null;
    return n;
  }
  if (field.type === "date") return parseDate(text);
  const folded = normaliseText(text).toLowerCase();
  return (field.enum ?? []).find((v) => normaliseText(v).toLowerCase() === folded) ?? null;
}
