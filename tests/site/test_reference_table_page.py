"""Chapter 10's reference table on the built site: a table that fits the page, not `| … |` text.

The table is Markdown that a code cell displays; myst-nb renders such output as CommonMark (no
tables) unless the cell's metadata asks for MyST (`mystnb: {markdown_format: myst}`).
"""

PAGE = "book/10_evaluation.html"
HEADER = "test -log p(x)"  # a column of reference_table.SCORES

# Every table on the page whose header row names a "model" column (the reference table's two
# parts): its header cells, its row count, whether it (or the box the theme wraps it in) scrolls
# sideways, and any paragraph left holding the table's Markdown.
TABLES = """(header) => {
  const found = [];
  for (const table of document.querySelectorAll("table")) {
    const heads = [...table.querySelectorAll("thead th, tr:first-child th")]
      .map((th) => th.textContent.trim());
    if (!heads.includes("model")) continue;
    const boxes = [table, table.parentElement];
    const scrolls = boxes.some((box) => box.scrollWidth > box.clientWidth + 1);
    found.push({heads, rows: table.querySelectorAll("tbody tr").length, scrolls,
                text: table.textContent});
  }
  const raw = [...document.querySelectorAll("p")].map((p) => p.textContent)
    .filter((text) => text.includes("| " + header));
  return {found, raw};
}"""


def test_chapter_10_shows_the_reference_table_as_a_table_that_fits(light, server):
    page = light.new_page()
    try:
        page.goto(f"{server}/{PAGE}", wait_until="load")
        seen = page.evaluate(TABLES, HEADER)
    finally:
        page.close()
    assert seen["raw"] == [], f"{PAGE}: the reference table is left as paragraph text"
    scores = [t for t in seen["found"] if HEADER in t["heads"]]
    assert scores, f"{PAGE}: no <table> with a '{HEADER}' header cell"
    assert {"model", "estimator", "test -ELBO", HEADER} <= set(scores[0]["heads"])
    assert scores[0]["rows"] >= 4  # Burda et al.'s figures and the classic example at least
    assert "86.76" in scores[0]["text"] and "about 105" in scores[0]["text"]
    assert any("protocol" in t["heads"] for t in seen["found"]), "the protocol part is missing"
    for table in seen["found"]:
        assert not table["scrolls"], f"{PAGE}: a table {table['heads']} scrolls sideways at 1280 px"
        assert "{cite}" not in table["text"], f"{PAGE}: a raw {{cite}} role in the table"
