#!/usr/bin/env python3
"""Generate the invoices extraction example: OCR-like plain-text invoices with gold fields.

    python examples/invoices/make_invoices.py                 # rewrites the committed files
    python examples/invoices/make_invoices.py --out /tmp/inv  # elsewhere
    python examples/invoices/make_invoices.py --seed 3        # another draw

Writes train.jsonl (240 rows), valid.jsonl (40) and test.jsonl (60), one JSON object a line:
`{"input": text, "output": {"invoice_number", "vendor", "due_date", "total"}}`, where
`vendor` is the issuer's name exactly as written, `due_date` the payment due date as
YYYY-MM-DD (null when the invoice states none) and `total` the grand total as a number.

Everything is invented: vendor, customer, street and town names, phone numbers and
amounts. The same seed gives byte-identical files (standard library only: `random.Random`,
no locale-dependent formatting).

Generalisation is built in: the test split holds out one layout (the vendor named only in a
"remit payment to" footer) and a quarter of the vendors, neither seen in train or valid.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import re
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

SEED = 20240917
COUNTS = {"train": 240, "valid": 40, "test": 60}
FIELDS = ("invoice_number", "vendor", "due_date", "total")
HERE = Path(__file__).resolve().parent

# ----------------------------------------------------------------------------- invented names

# (name, trade); the last vendor of each trade is held out for the test split.
VENDOR_BASES = [
    ("Kestrelwick Print", "print"), ("Inkreed & Mallow", "print"), ("Papermoth Press", "print"),
    ("Lantern Row Printing", "print"),
    ("Brackenfold Joinery", "joinery"), ("Oakhallow Carpentry", "joinery"),
    ("Tillbury & Crane Woodworks", "joinery"), ("Marlpit Timber Works", "joinery"),
    ("Saltmarrow Kitchen", "catering"), ("Pepperwick Catering", "catering"),
    ("Little Fennel Events", "catering"), ("Quincemoor Catering", "catering"),
    ("Brightmere Cleaning", "cleaning"), ("Spotless Heron Services", "cleaning"),
    ("Mossgate Cleaning", "cleaning"), ("Dunlin Facility Care", "cleaning"),
    ("Byteharbour Systems", "it"), ("Quillonby Networks", "it"), ("Pixelfen IT", "it"),
    ("Cobaltreach Solutions", "it"),
    ("Harrowgill Plumbing", "trades"), ("Tamsworth & Pell Electrical", "trades"),
    ("Copperwyn Heating", "trades"), ("Voltwren Electric", "trades"),
    ("Ostrander Vale Logistics", "logistics"), ("Swiftmarrow Couriers", "logistics"),
    ("Palletfield Freight", "logistics"), ("Gullhaven Transport", "logistics"),
    ("Quillmere Office Supply", "office"), ("Paperlark Stationers", "office"),
    ("Deskfern Supplies", "office"), ("Marrowby Office", "office"),
    ("Thistlebrook Gardencraft", "garden"), ("Greenbrake Groundcare", "garden"),
    ("Wyndle Landscapes", "garden"), ("Fernacre Outdoor", "garden"),
]
TRADES = ["print", "joinery", "catering", "cleaning", "it", "trades", "logistics", "office", "garden"]
HELD_OUT_VENDORS = {next(n for n, t in reversed(VENDOR_BASES) if t == trade) for trade in TRADES}

# trade -> (item, unit price range in whole currency units)
ITEMS = {
    "print": [("Flyers A5 (250)", 40, 120), ("Business cards (500)", 35, 90), ("Roll-up banner 85x200", 60, 180),
              ("Poster A2 gloss", 8, 25), ("Design work (hours)", 45, 95), ("Letterheads (1000)", 70, 160)],
    "joinery": [("Oak shelving unit", 180, 650), ("Kitchen door refit", 45, 120), ("Skirting board (m)", 6, 18),
                ("Labour (hours)", 30, 65), ("Brass hinges (pair)", 4, 15), ("Staircase handrail", 220, 900)],
    "catering": [("Lunch buffet (per head)", 9, 28), ("Coffee & pastries", 4, 9), ("Canapes (tray of 24)", 30, 75),
                 ("Staff service (hours)", 18, 35), ("Delivery & setup", 25, 80), ("Celebration cake", 45, 160)],
    "cleaning": [("Office clean (weekly)", 90, 320), ("Carpet shampoo (m2)", 2, 6), ("Window cleaning", 40, 150),
                 ("Deep clean, kitchen", 120, 400), ("Consumables", 15, 60), ("Washroom service", 35, 110)],
    "it": [("Laptop setup", 60, 150), ("Network switch 24-port", 140, 480), ("On-site support (hours)", 55, 120),
           ("Cloud backup (monthly)", 20, 90), ("Cat6 cable 30m", 12, 40), ("Firewall licence (1 yr)", 300, 1400)],
    "trades": [("Call-out fee", 40, 95), ("Boiler service", 70, 160), ("Copper pipe 15mm (m)", 3, 9),
               ("Labour (hours)", 35, 80), ("Socket replacement", 25, 70), ("Consumer unit upgrade", 350, 900)],
    "logistics": [("Pallet delivery", 45, 140), ("Same-day courier", 18, 75), ("Storage (pallet/week)", 5, 14),
                  ("Fuel surcharge", 10, 60), ("Handling fee", 8, 30), ("Container haulage 40ft", 600, 1900)],
    "office": [("Copy paper A4 (box of 5)", 18, 35), ("Ballpoint pens (box of 50)", 6, 15),
               ("Toner cartridge 26A", 45, 130), ("Lever arch files (10)", 9, 22), ("Desk organiser", 7, 20),
               ("Ergonomic chair", 140, 420)],
    "garden": [("Lawn mowing", 25, 70), ("Hedge trimming", 40, 140), ("Topsoil (tonne)", 35, 80),
               ("Green waste removal", 30, 110), ("Labour (hours)", 20, 45), ("Patio installation", 800, 3200)],
}

CUSTOMERS = [
    "Harbourline Dental Practice", "Pemberwick Lodge Hotel", "Cinder Hill Veterinary Clinic",
    "Wickham & Ashby Solicitors", "Ravensmoor Primary School", "Okafor Family Bakery", "Lindqvist Architects",
    "Silverbank Yoga Studio", "Mrs Adaeze Nwosu", "Mr Tobias Hartwell", "Bluewell Marina Club",
    "Farrant Physiotherapy", "Goldcrest Property Management", "Ms Priya Raman", "Aldergrove Care Home",
    "Tern Point Brewing", "Copse End Community Hall", "Dr Ines Moreau", "Halverson Motors",
    "Juniper Street Dental", "Mr Daniel Achterberg", "Sable Fox Theatre", "Kittiwake Surf School",
    "Wren & Willow Florists",
]
PEOPLE = ["Anna Petrescu", "Marcus Oyelaran", "Hannah Lowe", "Siti Aminah", "Jonas Verhoeven", "Carla Benedetti",
          "Tom Whitcombe", "Farah Haddad", "Lee Wei Ming", "Grace Mbeki", "Oliver Strand", "Nadia Kowalczyk"]
STREETS = ["Quarry", "Heronsgate", "Willowmere", "Ashcombe", "Larkspur", "Foxglove", "Tanner's Mill",
           "Birchwood", "Copperfield", "Millbrook", "Kingfisher", "Old Orchard", "Saddler", "Rookery"]
BANKS = ["Fenmarch Mutual Bank", "Harbourvale Trust Bank", "Greyling Savings", "Alderwick Cooperative Bank"]

REGIONS = {
    "us": {
        "suffixes": ["LLC", "Inc.", "Co.", ""],
        "currency": [("$", ""), ("$ ", ""), ("USD ", ""), ("US$", "")],
        "eu_numbers": 0.0,
        "dates": ["mon_d_y", "month_d_y", "us_slash", "iso"],
        "tax": [("Sales tax ({rate})", 0.0725), ("Sales Tax {rate}", 0.0625), ("Tax ({rate})", 0.08),
                ("Sales tax", 0.0)],
        "towns": [("Maple Hollow", "OR"), ("Port Amberley", "NC"), ("Elmbridge Falls", "VT"),
                  ("Cedar Bluff", "CO"), ("Harlow Springs", "OH")],
    },
    "uk": {
        "suffixes": ["Ltd", "Limited", "& Co. Ltd", ""],
        "currency": [("£", ""), ("GBP ", ""), ("£ ", "")],
        "eu_numbers": 0.0,
        "dates": ["dmy_slash", "d_mon_y", "d_month_y", "d_mon_y_dash"],
        "tax": [("VAT @ {rate}", 0.20), ("VAT {rate}", 0.20), ("VAT ({rate})", 0.20)],
        "towns": ["Ashcombe", "Little Haddon", "Wrenford", "Kingsmere", "Stowbridge"],
    },
    "my": {
        "suffixes": ["Sdn Bhd", "Sdn. Bhd.", "Enterprise", "Trading"],
        "currency": [("RM", ""), ("RM ", ""), ("MYR ", "")],
        "eu_numbers": 0.0,
        "dates": ["dmy_slash", "dmy_dash", "d_mon_y", "d_mon_yy"],
        "tax": [("SST {rate}", 0.08), ("SST {rate}", 0.06), ("Service Tax {rate}", 0.06), ("SST", 0.0)],
        "towns": ["Bandar Seri Kenanga", "Pekan Lama Jaya", "Kampung Damai", "Taman Sri Melur"],
    },
    "eu": {
        "suffixes": ["GmbH", "B.V.", "S.r.l.", "Oy"],
        "currency": [("EUR ", ""), ("€", ""), ("€ ", ""), ("", " EUR"), ("", " €")],
        "eu_numbers": 0.6,
        "dates": ["dmy_dot", "iso", "d_month_y", "dmy_dot_yy"],
        "tax": [("VAT {rate}", 0.19), ("VAT {rate}", 0.21), ("VAT ({rate})", 0.20), ("VAT {rate}", 0.09)],
        "towns": ["Altheim", "Vennberg", "Lindau am Brook", "Sankt Orlen", "Dorvik"],
    },
}
REGION_NAMES = list(REGIONS)

MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]

# ----------------------------------------------------------------------------- labels

ID_LABELS = ["Invoice No:", "Invoice No.", "INV #", "Invoice #", "Invoice Number:", "Invoice number", "Bill number:",
             "Invoice no"]
DATE_LABELS = ["Invoice Date:", "Date:", "Invoice date", "Date of issue:", "Issued:", "Dated"]
DUE_LABELS = ["Due Date:", "Due date", "Payment due:", "Due:", "Pay by:", "Due by"]
TOTAL_LABELS = ["TOTAL", "Total", "Grand Total", "Total due", "Amount due", "Balance due", "Invoice total",
                "TOTAL DUE", "Total amount"]


# ----------------------------------------------------------------------------- text with marked values

def mark(field: str, text: str) -> str:
    """`text` tagged as the value of `field`; `unmark` turns tags into spans."""
    return f"\x01{field}\x02{text}\x03"


_MARK = re.compile(r"\x01(\w+)\x02(.*?)\x03", re.S)


def visible(text: str) -> str:
    return _MARK.sub(lambda m: m.group(2), text)


def pad(text: str, width: int) -> str:
    return text + " " * max(1, width - len(visible(text)))


def unmark(text: str) -> tuple[str, dict[str, list[tuple[int, int]]]]:
    """Plain text and, per field, the [start, end) spans where its value is written."""
    out, spans, last = [], {}, 0
    length = 0
    for m in _MARK.finditer(text):
        before = text[last:m.start()]
        out.append(before)
        length += len(before)
        spans.setdefault(m.group(1), []).append((length, length + len(m.group(2))))
        out.append(m.group(2))
        length += len(m.group(2))
        last = m.end()
    out.append(text[last:])
    return "".join(out), spans


# ----------------------------------------------------------------------------- formatting

def one_line(lines: list[str]) -> str:
    return ", ".join(line.rstrip(",") for line in lines)


def fmt_date(d: dt.date, style: str) -> str:
    mon = MONTHS[d.month - 1]
    return {
        "mon_d_y": f"{mon[:3]} {d.day}, {d.year}",
        "month_d_y": f"{mon} {d.day}, {d.year}",
        # month first only when the day cannot be read as a month (day-first is the default reading)
        "us_slash": f"{d.month:02d}/{d.day:02d}/{d.year}" if d.day > 12 else f"{mon[:3]} {d.day:02d}, {d.year}",
        "iso": d.isoformat(),
        "dmy_slash": f"{d.day:02d}/{d.month:02d}/{d.year}",
        "dmy_dash": f"{d.day:02d}-{d.month:02d}-{d.year}",
        "dmy_dot": f"{d.day:02d}.{d.month:02d}.{d.year}",
        "dmy_dot_yy": f"{d.day:02d}.{d.month:02d}.{d.year % 100:02d}",
        "d_mon_y": f"{d.day} {mon[:3]} {d.year}",
        "d_mon_y_dash": f"{d.day:02d}-{mon[:3]}-{d.year}",
        "d_mon_yy": f"{d.day:02d}-{mon[:3]}-{d.year % 100:02d}",
        "d_month_y": f"{d.day} {mon} {d.year}",
    }[style]


class Money:
    """One document's way of writing amounts."""

    def __init__(self, rng: random.Random, region: dict):
        self.prefix, self.suffix = rng.choice(region["currency"])
        self.eu = rng.random() < region["eu_numbers"]
        self.grouped = rng.random() < 0.9

    def num(self, cents: int) -> str:
        whole, frac = divmod(abs(cents), 100)
        text = f"{whole:,}" if self.grouped else str(whole)
        text = f"{'-' if cents < 0 else ''}{text}.{frac:02d}"
        return text.translate(str.maketrans(",.", ".,")) if self.eu else text

    def cur(self, cents: int, field: str | None = None) -> str:
        number = self.num(cents)
        return f"{self.prefix}{mark(field, number) if field else number}{self.suffix}"


def noisy(rng: random.Random, label: str) -> str:
    """OCR slips in labels (never in values): I->l, O->0 in "No", a lost colon."""
    r = rng.random()
    if r < 0.03 and label.startswith("I"):
        return "l" + label[1:]
    if r < 0.05 and "No" in label:
        return label.replace("No", "N0", 1)
    if r < 0.08 and label.endswith(":"):
        return label[:-1]
    return label


def labelled(rng: random.Random, label: str, value: str, width: int = 0) -> str:
    label = noisy(rng, label)
    sep = "" if label.endswith((":", "#")) and rng.random() < 0.3 else " "
    return pad(label, width) + value if width else f"{label}{sep}{value}"


# ----------------------------------------------------------------------------- one invoice

def make_vendors(rng: random.Random) -> dict[str, dict]:
    """A fixed profile (region, legal name, address, phone...) for every vendor."""
    vendors = {}
    for i, (base, trade) in enumerate(VENDOR_BASES):
        region = REGION_NAMES[(i + i // 4) % len(REGION_NAMES)]  # each region in every trade, held out or not
        suffix = rng.choice(REGIONS[region]["suffixes"])
        name = f"{base} {suffix}".strip()
        slug = re.sub(r"[^a-z]", "", base.lower())
        vendors[name] = {
            "name": name, "trade": trade, "region": region, "address": address(rng, region),
            "phone": phone(rng, region), "email": f"{rng.choice(['accounts', 'billing', 'hello', 'office'])}"
                                                 f"@{slug}.example",
            "reg": registration(rng, region), "held_out": base in HELD_OUT_VENDORS,
        }
    return vendors


def address(rng: random.Random, region: str) -> list[str]:
    street = rng.choice(STREETS)
    kind = rng.choice(["Lane", "Road", "Street", "Avenue", "Way", "Drive"])
    towns = REGIONS[region]["towns"]
    if region == "us":
        town, state = rng.choice(towns)
        first = f"{rng.randint(12, 9800)} {street} {kind}"
        if rng.random() < 0.4:
            first += f", Suite {rng.randint(100, 450)}"
        return [first, f"{town}, {state} {rng.randint(10000, 99899)}"]
    if region == "uk":
        first = f"Unit {rng.randint(1, 30)}, {street} {kind}" if rng.random() < 0.5 else \
            f"{rng.randint(1, 220)} {street} {kind}"
        letters = "ABCDEFGHJKLMNPRSTUWY"
        post = (f"{rng.choice(letters)}{rng.choice(letters)}{rng.randint(1, 29)} "
                f"{rng.randint(1, 9)}{rng.choice(letters)}{rng.choice(letters)}")
        return [first, rng.choice(towns), post]
    if region == "my":
        jalan = rng.choice(["Cempaka", "Melur", "Kenanga", "Anggerik", "Seroja", "Dahlia", "Teratai"])
        taman = rng.choice(["Taman Bukit Kenanga", "Taman Desa Seroja", "Taman Indah Jaya", "Taman Permata"])
        return [f"No. {rng.randint(1, 88)}, Jalan {jalan} {rng.randint(1, 12)},", f"{taman},",
                f"{rng.randint(40000, 81999)} {rng.choice(towns)}"]
    word = rng.choice(["Lindenweg", "Molenstraat", "Rue des Tanneurs", "Via dei Mulini", "Kirkkokatu",
                       "Am Hafen", "Brouwersgracht"])
    return [f"{word} {rng.randint(1, 140)}", f"{rng.randint(10000, 99999)} {rng.choice(towns)}"]


def phone(rng: random.Random, region: str) -> str:
    if region == "us":
        return f"({rng.randint(201, 989)}) 555-01{rng.randint(0, 99):02d}"
    if region == "uk":
        return f"01632 960{rng.randint(0, 999):03d}"
    if region == "my":
        return f"+60 3-{rng.randint(5000, 9999)} {rng.randint(1000, 9999)}"
    return f"+49 {rng.randint(20, 899)} {rng.randint(100000, 999999)}"


def registration(rng: random.Random, region: str) -> str:
    if region == "us":
        return f"EIN {rng.randint(10, 99)}-{rng.randint(1000000, 9999999)}"
    if region == "uk":
        return f"Company No. {rng.randint(1000000, 9999999):08d}  VAT Reg. GB {rng.randint(100, 999)} " \
               f"{rng.randint(1000, 9999)} {rng.randint(10, 99)}"
    if region == "my":
        return f"(Co. Reg. No. {rng.randint(2010, 2023)}0{rng.randint(1000000, 9999999)})"
    return f"VAT ID DE{rng.randint(100000000, 999999999)}"


def invoice_number(rng: random.Random, year: int) -> str:
    n = rng.randint(1, 99999)
    return rng.choice([
        f"INV-{year}-{n:05d}", f"INV{n:06d}", f"SI-{n:06d}", f"A{n:05d}", f"{year}/{n % 10000:04d}",
        f"F{year}{n % 10000:04d}", f"{rng.randint(10000, 99999)}", f"IN{year % 100}-{n % 1000:03d}",
        f"{rng.choice('BCDKMT')}{rng.choice('BCDKMT')}-{n:05d}",
    ])


def other_reference(rng: random.Random) -> str:
    return rng.choice([f"PO-{rng.randint(1000, 99999)}", f"SO{rng.randint(10000, 99999)}",
                       f"ORD-{rng.randint(100000, 999999)}", f"{rng.randint(4000000, 4999999)}"])


def build(rng: random.Random, vendor: dict, layout: str) -> dict:
    """One invoice: its marked-up text (layout applied) and its gold output."""
    region = REGIONS[vendor["region"]]
    money = Money(rng, region)
    issued = dt.date(2023, 1, 1) + dt.timedelta(days=rng.randint(0, 1060))
    terms_days = rng.choice([7, 14, 15, 30, 30, 45, 60])
    due = issued + dt.timedelta(days=terms_days)
    has_due = rng.random() < 0.75
    date_style = rng.choice(region["dates"])
    due_style = date_style if rng.random() < 0.85 else rng.choice(region["dates"])
    items = []
    for desc, lo, hi in rng.sample(ITEMS[vendor["trade"]], rng.choice([1, 2, 2, 3, 3, 4])):
        if hi <= 20:
            qty = rng.choice([5, 10, 12, 20, 25, 40, 50, 60])
        else:
            qty = rng.choice([1, 1, 1, 2, 3, 4, 5, 6, 8, 10]) if hi < 100 else rng.choice([1, 1, 2, 3])
        unit = rng.randint(lo * 100, hi * 100) // 5 * 5
        items.append((desc, qty, unit, qty * unit))
    subtotal = sum(i[3] for i in items)
    discount = -_round(subtotal * Decimal(rng.choice([5, 10, 15])) / 100) if rng.random() < 0.15 else 0
    shipping = rng.randint(5, 60) * 100 + rng.choice([0, 50, 95]) if rng.random() < 0.2 else 0
    tax_label, rate = rng.choice(region["tax"])
    taxed = subtotal + discount + shipping
    tax = _round(taxed * Decimal(str(rate)))
    total = taxed + tax
    customer = rng.choice(CUSTOMERS)
    vendor_name = vendor["name"]
    inv = {
        "vendor": vendor_name, "vendor_info": vendor, "money": money, "items": items,
        "number": invoice_number(rng, issued.year), "ref": other_reference(rng),
        "issued": fmt_date(issued, date_style),
        "ordered": fmt_date(issued - dt.timedelta(days=rng.randint(2, 20)), date_style),
        "due": fmt_date(due, due_style) if has_due else None, "terms_days": terms_days,
        "subtotal": subtotal, "discount": discount, "shipping": shipping, "tax": tax, "total": total,
        "tax_label": tax_label.format(rate=f"{rate * 100:g}%"), "customer": customer,
        "customer_address": address(rng, vendor["region"]), "person": rng.choice(PEOPLE),
        "period": (fmt_date(issued - dt.timedelta(days=45), date_style),
                   fmt_date(issued - dt.timedelta(days=15), date_style)),
    }
    if layout in ("receipt",) and rng.random() < 0.6:
        inv["vendor"] = vendor_name.upper()
    marked = LAYOUTS[layout](rng, inv)
    marked = "\n".join(line.rstrip() for line in marked.strip("\n").split("\n"))
    text, spans = unmark(marked)
    output = {
        "invoice_number": inv["number"], "vendor": inv["vendor"],
        "due_date": due.isoformat() if has_due else None, "total": total / 100,
    }
    return {"input": text, "output": output, "spans": spans, "layout": layout}


def _round(x: Decimal) -> int:
    return int(Decimal(x).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def terms_text(rng: random.Random, inv: dict) -> str:
    n = inv["terms_days"]
    if inv["due"] is None and rng.random() < 0.4:
        return rng.choice(["Payment due on receipt.", "Terms: due upon receipt", "Payable on receipt"])
    return rng.choice([f"Payment terms: Net {n}", f"Terms: {n} days", f"Payment within {n} days of invoice date.",
                       f"Terms: Net {n} days"])


def items_table(rng: random.Random, inv: dict, upper: bool = False) -> str:
    m = inv["money"]
    head = rng.choice([("Description", "Qty", "Unit price", "Amount"), ("Item", "Qty", "Rate", "Total"),
                       ("Description", "Quantity", "Price", "Line total")])
    if upper:
        head = tuple(h.upper() for h in head)
    rows = [f"{pad(head[0], 26)}{pad(head[1], 5)}{pad(head[2], 11)}{head[3]}"]
    for desc, qty, unit, amount in inv["items"]:
        rows.append(f"{pad(desc.upper() if upper else desc, 26)}{pad(str(qty), 5)}{pad(m.num(unit), 11)}"
                    f"{m.num(amount)}")
    return "\n".join(rows)


def totals_block(rng: random.Random, inv: dict, width: int = 20, labels: list[str] | None = None) -> list[str]:
    m = inv["money"]
    lines = [labelled(rng, rng.choice(["Subtotal", "Sub-total", "Sub Total", "Net amount"]), m.num(inv["subtotal"]),
                      width)]
    if inv["discount"]:
        lines.append(labelled(rng, "Discount", m.num(inv["discount"]), width))
    if inv["shipping"]:
        lines.append(labelled(rng, rng.choice(["Shipping", "Delivery", "Freight"]), m.num(inv["shipping"]), width))
    if inv["tax"] or rng.random() < 0.5:
        lines.append(labelled(rng, inv["tax_label"], m.num(inv["tax"]), width))
    lines.append(labelled(rng, rng.choice(labels or TOTAL_LABELS), m.cur(inv["total"], "total"), width))
    return lines


def meta_lines(rng: random.Random, inv: dict, width: int = 0) -> list[str]:
    lines = [labelled(rng, rng.choice(ID_LABELS), mark("invoice_number", inv["number"]), width),
             labelled(rng, rng.choice(DATE_LABELS), inv["issued"], width)]
    if inv["due"]:
        lines.append(labelled(rng, rng.choice(DUE_LABELS), mark("due_date", inv["due"]), width))
    if rng.random() < 0.5:
        lines.append(labelled(rng, rng.choice(["PO Number:", "Your order:", "Order ref:", "Customer PO"]),
                              inv["ref"], width))
    if rng.random() < 0.3:
        lines.append(labelled(rng, rng.choice(["Order date:", "Delivery date:"]), inv["ordered"], width))
    return lines


# ----------------------------------------------------------------------------- layouts

def layout_classic(rng: random.Random, inv: dict) -> str:
    v = inv["vendor_info"]
    header = [mark("vendor", inv["vendor"]), *v["address"],
              rng.choice([f"Tel: {v['phone']}  Email: {v['email']}", f"Phone {v['phone']}", v["email"]])]
    title = rng.choice(["INVOICE", "Invoice", "TAX INVOICE"])
    width = rng.choice([0, 16])
    bill_to = [rng.choice(["Bill To:", "Billed to", "Customer:", "To:"]), inv["customer"], *inv["customer_address"]]
    blocks = ["\n".join(meta_lines(rng, inv, width)), "\n".join(bill_to)]
    if rng.random() < 0.5:
        blocks.reverse()
    footer = [terms_text(rng, inv)]
    if rng.random() < 0.5:
        footer.append(rng.choice(["Thank you for your business!", "Thank you!", f"Questions? Call {v['phone']}"]))
    parts = [("\n".join(header), title) if rng.random() < 0.8 else (title, "\n".join(header))]
    return "\n\n".join([*parts[0], *blocks, items_table(rng, inv), "\n".join(totals_block(rng, inv, width or 14)),
                        "\n".join(footer)])


def layout_columns(rng: random.Random, inv: dict) -> str:
    """Two columns read across by OCR: the vendor block on the left, invoice details on the right."""
    v = inv["vendor_info"]
    left = [mark("vendor", inv["vendor"]), *v["address"], f"Ph {v['phone']}"]
    right = ["INVOICE", *meta_lines(rng, inv)]
    width = max(len(visible(x)) for x in left) + rng.randint(3, 8)
    lines = [pad(left[i] if i < len(left) else "", width) + (right[i] if i < len(right) else "")
             for i in range(max(len(left), len(right)))]
    m = inv["money"]
    sold = f"{rng.choice(['Sold to:', 'Customer:', 'Bill to:'])} {inv['customer']}, {one_line(inv['customer_address'])}"
    items = [f"{qty} x {desc} @ {m.num(unit)} = {m.num(amount)}" for desc, qty, unit, amount in inv["items"]]
    totals = totals_block(rng, inv, 0)
    return "\n".join(lines) + "\n\n" + sold + "\n\n" + "\n".join(items) + "\n\n" + "\n".join(totals) + \
        "\n" + terms_text(rng, inv)


def layout_bill(rng: random.Random, inv: dict) -> str:
    """A service bill: account details, a billing period, and the amount due up front or at the end."""
    v = inv["vendor_info"]
    m = inv["money"]
    head = [f"{mark('vendor', inv['vendor'])} | {one_line(v['address'])}",
            rng.choice(["BILL", "Statement of charges", "Service bill", "INVOICE / BILL"])]
    acct = [f"Account number: {rng.randint(1000, 9999)} {rng.randint(1000, 9999)} {rng.randint(100, 999)}",
            labelled(rng, rng.choice(["Bill number:", "Bill No.", "Bill #", "Invoice No:"]),
                     mark("invoice_number", inv["number"])),
            labelled(rng, rng.choice(["Bill date:", "Date:", "Statement date:"]), inv["issued"]),
            f"Billing period: {inv['period'][0]} to {inv['period'][1]}",
            f"Customer: {inv['customer']}"]
    due_label = rng.choice(["Please pay by", "Payment due", "Due date:", "Pay by"])
    summary = [labelled(rng, rng.choice(["Amount due", "Total amount due", "Balance due"]),
                        m.cur(inv["total"], "total"))]
    if inv["due"]:
        summary.append(labelled(rng, due_label, mark("due_date", inv["due"])))
    charges = ["Charges this period:"] + [f"  {desc}  {qty} x {m.num(unit)}  {m.num(amount)}"
                                          for desc, qty, unit, amount in inv["items"]]
    totals = totals_block(rng, inv, 0, ["Total charges", "Total this bill", "Total due", "Amount due"])
    contact = f"Enquiries {v['phone']} / {v['email']}"
    if rng.random() < 0.5:  # summary first, as on many bills
        blocks = [head, acct, summary, charges, totals, [contact]]
    else:
        blocks = [head, acct, charges, totals, summary, [contact]]
    return "\n\n".join("\n".join(b) for b in blocks)


def layout_receipt(rng: random.Random, inv: dict) -> str:
    """A printed tax invoice: upper-case labels, rules, right-aligned amounts."""
    v = inv["vendor_info"]
    m = inv["money"]
    rule = rng.choice(["-" * 40, "=" * 40, "- " * 20])
    head = [mark("vendor", inv["vendor"]), v["reg"], *v["address"], f"TEL: {v['phone']}", "", "TAX INVOICE"]
    meta = [pad(noisy(rng, "INVOICE NO"), 12) + ": " + mark("invoice_number", inv["number"]),
            pad("DATE", 12) + ": " + inv["issued"]]
    if inv["due"]:
        meta.append(pad(rng.choice(["DUE DATE", "PAY BEFORE", "DUE"]), 12) + ": " + mark("due_date", inv["due"]))
    meta.append(pad("CUSTOMER", 12) + ": " + inv["customer"])
    if rng.random() < 0.5:
        meta.append(pad("CASHIER", 12) + ": " + inv["person"].split()[0].upper())
    lines = [f"{pad(str(qty), 4)}{pad(desc.upper(), 27)}{m.num(amount)}" for desc, qty, _, amount in inv["items"]]
    totals = [pad("SUBTOTAL", 22) + m.num(inv["subtotal"])]
    if inv["discount"]:
        totals.append(pad("DISCOUNT", 22) + m.num(inv["discount"]))
    if inv["shipping"]:
        totals.append(pad("DELIVERY", 22) + m.num(inv["shipping"]))
    totals.append(pad(inv["tax_label"].upper(), 22) + m.num(inv["tax"]))
    totals.append(pad(rng.choice(["GRAND TOTAL", "TOTAL", "NET TOTAL", "TOTAL AMOUNT"]), 22 - len(m.prefix))
                  + m.cur(inv["total"], "total"))
    tail = [f"TERMS: {inv['terms_days']} DAYS", rng.choice(["THANK YOU", "THANK YOU. PLEASE COME AGAIN",
                                                            "GOODS SOLD ARE NOT RETURNABLE"])]
    return "\n".join([*head, *meta, rule, "QTY DESCRIPTION" + " " * 16 + "AMOUNT", *lines, rule, *totals, rule,
                      *tail])


def layout_letter(rng: random.Random, inv: dict) -> str:
    """An e-mail with the invoice in running text."""
    v = inv["vendor_info"]
    m = inv["money"]
    number = inv["number"]
    head = [f"From: {mark('vendor', inv['vendor'])} <{v['email']}>", f"To: {inv['customer']}",
            f"Subject: {rng.choice(['Invoice', 'Your invoice', 'Invoice no.'])} {mark('invoice_number', number)}"]
    body = [f"Dear {rng.choice(['customer', 'Sir or Madam', inv['customer']])},",
            f"Please find below our invoice {mark('invoice_number', number)} dated {inv['issued']} for the "
            f"order of {inv['ordered']} (your ref. {inv['ref']})."]
    items = [f"- {qty} x {desc}: {m.num(amount)}" for desc, qty, _, amount in inv["items"]]
    extra = f"{inv['tax_label']} {m.num(inv['tax'])}" if inv["tax"] else "no tax"
    pay = f"The total amount payable is {m.cur(inv['total'], 'total')} (subtotal {m.num(inv['subtotal'])}, {extra})"
    if inv["due"]:
        pay += rng.choice([f" and is due by {mark('due_date', inv['due'])}.",
                           f". Please pay by {mark('due_date', inv['due'])}.",
                           f", due date {mark('due_date', inv['due'])}."])
    else:
        pay += rng.choice([". Payment is due on receipt.", ".", f". Our terms are {inv['terms_days']} days."])
    bank = f"Bank: {rng.choice(BANKS)}, account {rng.randint(10000000, 99999999)}."
    sign = ["Kind regards,", inv["person"], f"Accounts, {mark('vendor', inv['vendor'])}", v["phone"]]
    return "\n\n".join(["\n".join(head), "\n".join(body), "\n".join(items), pay + " " + bank, "\n".join(sign)])


def layout_remit(rng: random.Random, inv: dict) -> str:
    """Held out for the test split: a pipe table and the vendor named only in the remittance footer."""
    v = inv["vendor_info"]
    m = inv["money"]
    top = [f"{rng.choice(['INVOICE', 'Invoice ref:', 'Document no.'])} {mark('invoice_number', inv['number'])}",
           f"Issued {inv['issued']}    Order date {inv['ordered']}",
           f"Customer: {inv['customer']}", f"Ship to: {one_line(inv['customer_address'])}"]
    table = ["Item | Qty | Price | Line total"] + [f"{desc} | {qty} | {m.num(unit)} | {m.num(amount)}"
                                                   for desc, qty, unit, amount in inv["items"]]
    totals = totals_block(rng, inv, 0, ["Invoice total:", "Total payable:", "Amount to pay:"])
    if inv["due"]:
        totals.append(f"{rng.choice(['Payable by', 'Settle by', 'Due date'])} {mark('due_date', inv['due'])}")
    else:
        totals.append(terms_text(rng, inv))
    remit = [rng.choice(["Remit payment to:", "Please make payment to:", "Payee:"]), mark("vendor", inv["vendor"]),
             *v["address"], f"{rng.choice(BANKS)} - account {rng.randint(10000000, 99999999)}", v["reg"]]
    return "\n\n".join("\n".join(b) for b in (top, table, totals, remit))


LAYOUTS = {
    "classic": layout_classic, "columns": layout_columns, "bill": layout_bill, "receipt": layout_receipt,
    "letter": layout_letter, "remit": layout_remit,
}
SEEN_LAYOUTS = ["classic", "columns", "bill", "receipt", "letter"]
HELD_OUT_LAYOUT = "remit"


# ----------------------------------------------------------------------------- splits

def generate(seed: int = SEED) -> dict[str, list[dict]]:
    """{split: rows}; each row has `input`, `output` and, for checks, `spans` and `layout`."""
    rng = random.Random(seed)
    vendors = make_vendors(rng)
    seen = [v for v in vendors.values() if not v["held_out"]]
    unseen = [v for v in vendors.values() if v["held_out"]]
    plans = {
        "train": [(layout, seen) for layout in SEEN_LAYOUTS for _ in range(COUNTS["train"] // 5)],
        "valid": [(layout, seen) for layout in SEEN_LAYOUTS for _ in range(COUNTS["valid"] // 5)],
        # test: 45 rows of the seen layouts, 15 of the held-out one; every other row from a held-out vendor
        "test": [(layout, unseen if i % 2 else seen)
                 for i, layout in enumerate([*SEEN_LAYOUTS * 9, *[HELD_OUT_LAYOUT] * 15])],
    }
    out, texts = {}, set()
    for split, plan in plans.items():
        rows = []
        for layout, pool in plan:
            while True:  # unique documents whose values are written where they are marked, and only there
                row = build(rng, rng.choice(pool), layout)
                if row["input"] not in texts and _values_unique(row):
                    break
            texts.add(row["input"])
            rows.append(row)
        rng.shuffle(rows)
        out[split] = rows
    return out


def _values_unique(row: dict) -> bool:
    """The invoice number and vendor occur in the text only where they are marked as the value."""
    text = row["input"]
    for field in ("invoice_number", "vendor"):
        value = row["output"][field]
        found = [m.start() for m in re.finditer(re.escape(value), text)]
        if found != [s for s, _ in row["spans"][field]]:
            return False
    return True


def write(out_dir: Path, seed: int = SEED) -> dict[str, int]:
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split, rows in generate(seed).items():
        with (out_dir / f"{split}.jsonl").open("w", encoding="utf-8", newline="\n") as f:
            for row in rows:
                f.write(json.dumps({"input": row["input"], "output": row["output"]}, ensure_ascii=False) + "\n")
        counts[split] = len(rows)
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=HERE, help="folder for the JSONL files (default: beside this script)")
    ap.add_argument("--seed", type=int, default=SEED)
    args = ap.parse_args()
    counts = write(args.out, args.seed)
    print(", ".join(f"{split}.jsonl: {n} rows" for split, n in counts.items()), f"-> {args.out}")


if __name__ == "__main__":
    main()
