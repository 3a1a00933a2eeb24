"""Long PDFs with facts on known pages, written with PyMuPDF in the test (and by the benchmark).

Every page carries ~30 lines: running prose from a fixed word list and a few "shipment" facts of
one template ("In 2019 the Lisbon depot received 4512 crates of olive oil from Porto."). A question
asks for one fact in other words ("How many crates of olive oil did the depot in Lisbon get in
2019?", "In Lisbon, how much olive oil came in to the depot?"); the other sentences share its city
or its goods, never both, so ranking must weigh the words that single the page out. `scan` makes
the same document without a text layer (each page rendered to an image, the images made into a PDF).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

CITIES = ["Lisbon", "Porto", "Madrid", "Seville", "Lyon", "Marseille", "Turin", "Naples", "Munich", "Hamburg",
          "Krakow", "Gdansk", "Vienna", "Graz", "Prague", "Brno", "Oslo", "Bergen", "Dublin", "Cork", "Ghent",
          "Antwerp", "Utrecht", "Leiden", "Zurich", "Basel", "Tallinn", "Riga", "Vilnius", "Helsinki"]
GOODS = [("crates", "olive oil"), ("pallets", "copper wire"), ("barrels", "red wine"), ("sacks", "coffee beans"),
         ("boxes", "ceramic tiles"), ("rolls", "cotton fabric"), ("drums", "engine oil"), ("bales", "raw wool"),
         ("cases", "glass bottles"), ("tonnes", "wheat flour"), ("crates", "canned tuna"), ("pallets", "roof slates"),
         ("boxes", "paper towels"), ("sacks", "rice"), ("barrels", "maple syrup"), ("rolls", "steel cable"),
         ("cases", "tomato paste"), ("crates", "apples"), ("bales", "hemp rope"), ("tonnes", "cement")]
SITES = [("depot", "depot"), ("warehouse", "warehouse"), ("harbour", "port"), ("terminal", "terminal")]
FILLER = ("the committee reviewed annual figures while regional offices reported steady progress on planning "
          "budgets staff training and maintenance schedules across every site during the period under review "
          "management noted that weather transport costs and supplier contracts affected results in several "
          "quarters and recommended further monitoring of delivery times inventory levels and customer "
          "satisfaction surveys").split()


@dataclass(frozen=True)
class Fact:
    page: int  # 1-based
    sentence: str
    question: str
    answer: str


def _fact(rng: random.Random, city: str, goods: tuple[str, str], year: int, page: int) -> Fact:
    site, site_q = rng.choice(SITES)
    unit, item = goods
    amount = rng.randrange(100, 9999)
    source = rng.choice([c for c in CITIES if c != city])
    sentence = f"In {year} the {city} {site} received {amount} {unit} of {item} from {source}."
    question = rng.choice([  # other words than the fact's; some leave out the year or the unit
        f"How many {unit} of {item} did the {site_q} in {city} get in {year}?",
        f"What quantity of {item} reached {city}'s {site_q} in {year}?",
        f"In {city}, how much {item} came in to the {site_q}?",
    ])
    return Fact(page, sentence, question, str(amount))


def facts_for(pages: int, count: int, seed: int = 0) -> tuple[list[Fact], list[list[str]]]:
    """`count` facts on distinct pages (each a unique city + goods pair), and every page's lines."""
    rng = random.Random(seed)
    pairs = [(c, g) for c in CITIES for g in GOODS]
    rng.shuffle(pairs)
    fact_pages = rng.sample(range(1, pages + 1), count) if count <= pages else \
        [rng.randrange(1, pages + 1) for _ in range(count)]
    facts = [_fact(rng, c, g, rng.randrange(2010, 2024), p) for (c, g), p in zip(pairs, fact_pages, strict=False)]
    lines = [[] for _ in range(pages)]
    used = {(c, g) for c, g in pairs[:len(facts)]}
    for page in range(pages):
        for _ in range(26):
            lines[page].append(" ".join(rng.choice(FILLER) for _ in range(12)).capitalize() + ".")
        for _ in range(3):  # distractors: the same template, a fact's city or goods (not both), another year
            c, g = pairs[rng.randrange(len(facts))] if facts else (rng.choice(CITIES), rng.choice(GOODS))
            while (c, g) in used:
                c, g = (rng.choice(CITIES), g) if rng.random() < 0.5 else (c, rng.choice(GOODS))
            lines[page].insert(rng.randrange(len(lines[page])), _fact(rng, c, g, rng.randrange(1990, 2010), 0).sentence)
    for f in facts:
        page_lines = lines[f.page - 1]
        page_lines.insert(rng.randrange(len(page_lines)), f.sentence)
    return facts, lines


def write_long_pdf(path: Path, pages: int = 300, facts: int = 200, seed: int = 0) -> list[Fact]:
    """A `pages`-page A4 PDF of 10-point text with `facts` facts on known pages; returns them."""
    import pymupdf

    found, lines = facts_for(pages, facts, seed)
    doc = pymupdf.open()
    for k, page_lines in enumerate(lines, start=1):
        page = doc.new_page(width=595, height=842)
        page.insert_text((50, 60), f"Annual logistics report, page {k}", fontsize=12)
        page.insert_text((50, 90), "\n".join(page_lines), fontsize=8)
    doc.save(str(path))
    doc.close()
    return found


def scan(path: Path, out: Path, dpi: int = 40) -> Path:
    """`path` without a text layer: every page rendered at `dpi` and placed as an image on a page."""
    import pymupdf

    with pymupdf.open(str(path)) as doc, pymupdf.open() as scanned:
        for page in doc:
            pix = page.get_pixmap(dpi=dpi, colorspace=pymupdf.csGRAY)
            new = scanned.new_page(width=page.rect.width, height=page.rect.height)
            new.insert_image(new.rect, stream=pix.tobytes("jpeg", jpg_quality=60))
        scanned.save(str(out))
    return out
