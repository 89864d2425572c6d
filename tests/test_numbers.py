"""Every measured number or quantity word in a chapter's prose is pinned by its section's checks.

The rule, for each markdown cell of a chapter (exercise solutions in dropdowns included) and for
book/index.md (no code cells: its measured tables are generated, between "<!-- begin: generated"
and "<!-- end: generated -->"):
1. A number typed in prose must appear, written as in the prose, as a literal of an `assert` in a
   check cell (tests/chapter_cells.py: tagged and folded) of the same section, a section being the
   cells from one `## ` heading to the next ("92%" may be pinned as 92 or 0.92, "3.0x" as 3.0,
   "-100.18" as 100.18 under a unary minus, "5,000" as 5000 or 5_000).
2. A quantity in words ("twice", "about half", "mostly", "all 20 dimensions", "more than" in a
   sentence with a number or a measured noun, ...) needs an assert in one of the section's
   check cells whose line carries a comment containing the phrase, e.g.
   `assert r > 2  # "more than twice"`.
3. Not claims: math, `code` and roles, link targets, heading, list and link numbering, references
   ("chapter 4", "exercise 2"), versions, years next to an author, labels ("2-D", "z2", "1s"),
   literals of the chapter's Settings cell, the constants in DEFINITIONS (single digits too, but
   not a count such as "0 of 20"), numbers in a sentence that carries a {cite} role, quoted words,
   and quantity words in a sentence that states an expectation ("we expect").
"""

import ast
import io
import json
import re
import tokenize
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from chapter_cells import is_check_cell

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures" / "numbers"
TOC = yaml.safe_load((ROOT / "_toc.yml").read_text())
CHAPTERS = [
    ROOT / f"{e['file']}.ipynb" for e in TOC["chapters"] if (ROOT / f"{e['file']}.ipynb").exists()
]
PAGES = [*CHAPTERS, ROOT / "book" / "index.md"]

# Numbers fixed by definition: prose may state them anywhere without a pin.
DEFINITIONS = {
    Decimal(28),  # MNIST images are 28 by 28 pixels
    Decimal(784),  # P = 28 * 28, the data size of MNIST
    Decimal(60_000),  # MNIST's training split
    Decimal(10_000),  # MNIST's test split
    Decimal(70_000),  # both splits together
    Decimal(255),  # the largest grey level of MNIST's 8-bit pixels
    Decimal(256),  # the number of grey levels of an 8-bit pixel
    Decimal(400),  # ModelConfig.hidden_dim's default: the default VAE is 784-400-20-400-784
    Decimal(20),  # ModelConfig.latent_dim's default, D of the default VAE
    Decimal(128),  # TrainConfig.batch_size's default, the batch of every training run
    Decimal("0.01"),  # active_units' threshold, the definition of an active unit (Burda et al.)
    *map(Decimal, range(10)),  # digit names ("a 7"), examples and small counts; not "0 of 20"
}

NUMBER = re.compile(
    r"(?<![\w.])(?<![A-Za-z]-)[-−]?((?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?)(%|×|x|ms)?"
    r"(?!\w)(?!\.\d)(?!,\d{3})(?!-[A-Za-z])"
)
WORD_NUMBER = r"(?:\d[\d,.]*|two|three|four|five|six|seven|eight|nine|ten|twenty|fifty|hundred)"
# Quantity words that are claims wherever they stand.
WORDS = [
    r"\btwice\b",
    r"\bthrice\b",
    r"(?<!each )\bhalf\b(?![- ]precision)",
    r"\bhalve[sd]\b",
    r"\bdouble[sd]\b",
    r"\b(?:one|two) thirds?\b",
    r"\ba third of\b",
    r"\b(?:one|three) quarters?\b",
    r"\ba quarter of\b",
    r"\b(?:one|two|three|four) fifths?\b|\ba (?:fifth|tenth)\b",
    r"\bmajority\b",
    r"\bnone of\b",
    r"\bmostly\b",
    r"\bmost of\b",
    r"\bmost (?:dimensions|units|latents|images|digits|pixels|samples|codes|points|examples)\b",
    r"\b(?:almost|nearly|virtually|practically) (?:all|every|none|no|always|never)\b",
    r"\ball (?:but )?(?!60,000|10,000|70,000)\d[\d,]* [a-z]+",  # not MNIST's splits
    rf"\b(?:{WORD_NUMBER}|several|many) times (?:faster|slower|larger|smaller|more|less|fewer"
    r"|higher|lower|bigger|greater|as|the|its|their)\b",
    rf"\b(?:{WORD_NUMBER}|several|many)-?fold\b",
]
# Comparisons: claims only in a sentence that also holds a number or a measured noun.
COMPARISONS = [
    r"\b(?:more|less|fewer|larger|smaller|higher|lower|bigger|greater|faster|slower|better|worse)"
    r" than\b(?! (?:one|a|an)\b)",
    r"\b(?:faster|slower)\b(?! than)",
]
MEASURED = re.compile(
    r"%|\b(?:nats?|bits?|ms|seconds?|milliseconds?|percent|variances?|KL|ELBO|loss|errors?"
    r"|time|speed|throughput|dimensions|units|correlation|gap)\b",
    re.I,
)
REFERENCE = re.compile(
    r"\b(?:chapters?|sections?|exercises?|solutions?|figures?|fig\.|tables?|equations?|eqs?\."
    r"|steps?|parts?|questions?|cells?|lines?|appendix|derivations?|examples?)\s+\d+(?:\.\d+)*"
    r"(?:\s*(?:,|and|or|to|–|-)\s*\d+(?:\.\d+)*)*",
    re.I,
)
CODE_DIRECTIVES = {"code-cell", "code-block", "code", "math", "raw", "eval-rst", "mermaid"}
FENCE = re.compile(r"^\s*(`{3,}|~{3,}|:{3,})\s*(\{([\w:-]+)\})?(.*)$")
CITE = "\x00CITE\x00"  # where a {cite} role stood
HIDDEN = "·"  # where math, code or a role stood


@dataclass
class Violation:
    chapter: str
    cell: int
    text: str  # the offending number or words
    sentence: str
    fix: str

    def __str__(self) -> str:
        where = f"{self.chapter} cell {self.cell}: {self.text!r} in {self.sentence!r}"
        return f"{where}\n    fix: {self.fix}"


def strip_fences(text: str) -> str:
    """Drop code fences; keep the prose (and title) of directives such as a solution dropdown."""
    out, code, directives = [], None, []
    for line in text.splitlines():
        m = FENCE.match(line)
        if code:
            code = (
                None if m and m[1][0] == code[0] and len(m[1]) >= len(code) and not m[2] else code
            )
        elif m and m[2] and m[3] not in CODE_DIRECTIVES:
            directives.append(m[1])
            out.append(m[4])
        elif m and not m[2] and directives and m[1][0] == directives[-1][0] and not m[4].strip():
            directives.pop()
        elif m:
            code = m[1]
        elif not re.match(r"^\s*:[\w-]+:", line):  # a directive's options
            out.append(line)
    return "\n".join(out)


def sentences(markdown: str) -> list[str]:
    """The prose of a markdown cell, with everything that is not a claim blanked, in sentences."""
    text = strip_fences(markdown)
    for pattern, repl in [
        (r"<!--.*?-->", " "),
        (r"\$\$.*?\$\$|\\\[.*?\\\]|\\\(.*?\\\)|\\begin\{(\w+\*?)\}.*?\\end\{\1\}", HIDDEN),
        (r"\$[^$]+\$", HIDDEN),
        (r"\{cite(?::\w+)?\}`[^`]*`", CITE),
        (r"\[[^\]\n]*\]\(references\.md#[^)]*\)", CITE),  # a citation written as a link
        (r"\{[\w:-]+\}`[^`]*`", HIDDEN),
        (r"(`+).+?\1", HIDDEN),
        (r"\[\d+\.\s", "["),  # a numbered link, "[10. Evaluating ...](10_evaluation.ipynb)"
        (r"!?\[([^\]]*)\]\([^)]*\)", r"\1"),
        (r"<?https?://\S+", " "),
        (r"(?m)^(#{1,6})\s+\d+(?:\.\d+)*\.?\s", r"\1 "),
        (r"(?m)^\s*\d+[.)]\s", " "),
        (r"\b\d+(?:\.\d+){2,}\b", " "),  # versions
        (REFERENCE.pattern, " "),
        (r"\b(et al|e\.g|i\.e|vs|cf|Fig)\.", r"\1"),
    ]:
        text = re.sub(pattern, repl, text, flags=re.S | re.I)
    blocks = re.split(r"\n\s*\n|\n(?=\s*(?:[-*+|#]|\d+[.)]\s))", text)
    return [" ".join(s.split()) for b in blocks for s in re.split(r"(?<=[.!?])\s+", b) if s.strip()]


def is_year(sentence: str, match: re.Match) -> bool:
    before = sentence[: match.start()]
    return (
        match[1].isdigit()
        and len(match[1]) == 4
        and 1900 <= int(match[1]) <= 2100
        and bool(re.search(r"(?:[A-Z][a-z]+|al|\()[\s,]*$", before))
    )


def pins(number: str, suffix: str | None) -> set[str]:
    """The literals an assert may use to pin a number written in prose."""
    plain = number.replace(",", "")
    return {plain, str(Decimal(plain) / 100)} if suffix == "%" else {plain}


def python_source(cell: dict) -> str:
    """A code cell's source without IPython's magics and shell lines."""
    lines = "".join(cell["source"]).splitlines()
    return "\n".join(ln for ln in lines if ln.lstrip()[:1] not in "%!")


def code_facts(cell: dict | None) -> tuple[set[str], str]:
    """The number literals of the cell's asserts, as written, and their lines' comments."""
    if cell is None or cell["cell_type"] != "code":
        return set(), ""
    src = python_source(cell)
    try:
        tree = ast.parse(src)
        comments = {
            t.start[0]: t.string
            for t in tokenize.generate_tokens(io.StringIO(src).readline)
            if t.type == tokenize.COMMENT
        }
    except (SyntaxError, tokenize.TokenError):
        return set(), ""
    numbers, notes = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assert):
            lines = range(node.lineno, node.end_lineno + 1)
            notes += [comments.get(n, "") for n in lines]
            for const in ast.walk(node):
                if isinstance(const, ast.Constant) and type(const.value) in (int, float):
                    numbers.add(ast.get_source_segment(src, const).replace("_", "").lower())
    return numbers, " ".join(notes).lower()


def settings_numbers(cells: list[dict]) -> set[Decimal]:
    """Literals of the Settings cell: a code cell that says "Settings" in its first line's comment,
    or the first code cell after the markdown cell that says "Settings"."""
    marked = False
    for cell in cells:
        src = "".join(cell["source"])
        if cell["cell_type"] == "markdown" and re.search(r"^(#+ |\*\*)Settings", src, re.M):
            marked = True
        elif cell["cell_type"] == "code" and (marked or re.match(r"#.*Settings", src)):
            tokens = tokenize.generate_tokens(io.StringIO(python_source(cell)).readline)
            return {
                Decimal(t.string.replace("_", ""))
                for t in tokens
                if t.type == tokenize.NUMBER and "j" not in t.string.lower()
            }
    return set()


def is_free(m: re.Match, sentence: str, allowed: set[Decimal]) -> bool:
    """A number fixed by a definition or a setting; a digit that counts ("0 of 20") is measured."""
    value = Decimal(m[1].replace(",", ""))
    counted = value < 10 and re.match(r"\s+of\b", sentence[m.end() :])
    return value in allowed and not m[2] and not counted


def unbacked(
    sentence: str, allowed: set[Decimal], literals: set[str], comments: str
) -> list[tuple]:
    """(text, fix) of each claim in one sentence that the neighbouring asserts do not back."""
    found = []
    numbers = [m for m in NUMBER.finditer(sentence) if not is_year(sentence, m)]
    for m in numbers if CITE not in sentence else []:
        if not is_free(m, sentence, allowed) and not pins(m[1], m[2]) & literals:
            literal = " or ".join(sorted(pins(m[1], m[2]), key=len))
            fix = f"pin it: {literal} as a literal of an assert in the check cell of its section,"
            fix += " tolerance from a measured spread (a definition: Settings, $math$)"
            found.append((m[0], fix))
    if re.search(r"\bexpect", sentence, re.I):
        return found
    scoped = COMPARISONS if numbers or MEASURED.search(sentence) else []
    used = re.sub(r'"[^"]{1,40}"|“[^”]{1,40}”', " ", sentence)  # a quoted word is mentioned
    for w in (w for pattern in WORDS + scoped for w in re.finditer(pattern, used, re.I)):
        phrase = " ".join(w[0].lower().split())
        if phrase not in comments:
            found.append(
                (
                    w[0],
                    f"back it: an assert in its section's check cell whose line ends with"
                    f'  # "{phrase}"',
                )
            )
    return found


def check(path: Path) -> list[Violation]:
    """Every unbacked number and quantity word in the markdown cells of a notebook or a page."""
    if path.suffix == ".md":  # a page: no code cells, so only what a generated block brings
        text = re.sub(
            r"<!-- begin: generated.*?<!-- end: generated -->", " ", path.read_text(), flags=re.S
        )
        cells = [{"cell_type": "markdown", "source": [text]}]
    else:
        cells = json.loads(path.read_text())["cells"]
    settings = settings_numbers(cells)
    section, prose = 0, []  # prose: (cell index, section, markdown)
    literals: dict[int, set[str]] = {}
    comments: dict[int, str] = {}
    for i, cell in enumerate(cells):
        if cell["cell_type"] == "markdown":
            for part in re.split(r"(?m)^(?=## )", "".join(cell["source"])):
                section += part.startswith("## ")
                prose.append((i, section, part))
        elif is_check_cell(cell):
            numbers, notes = code_facts(cell)
            literals[section] = literals.get(section, set()) | numbers
            comments[section] = comments.get(section, "") + " " + notes
    found = []
    for i, at, markdown in prose:
        for sentence in sentences(markdown):
            claims = unbacked(
                sentence, DEFINITIONS | settings, literals.get(at, set()), comments.get(at, "")
            )
            shown = sentence.replace(CITE, "{cite}")
            found += [Violation(path.stem, i, text, shown, fix) for text, fix in claims]
    return found


# Planted violations, each caught by name; their backed twins must pass.
CAUGHT = {
    "unpinned_number": ["102.2"],
    "assert_in_another_section": ["102.2"],
    "assert_outside_a_check_cell": ["102.2"],
    "other_precision": ["102.2"],
    "twice_unbacked": ["twice"],
    "about_half_unbacked": ["half"],
    "percentage_unbacked": ["92%"],
    "counted_digit": ["0"],
    "words_unbacked": ["mostly", "all 20 dimensions", "more than", "two thirds", "almost every"],
}
PASSING = ["backed", "allowed"]


@pytest.mark.parametrize("name", sorted(CAUGHT))
def test_planted_violation_is_caught(name):
    assert [v.text for v in check(FIXTURES / f"{name}.ipynb")] == CAUGHT[name]


@pytest.mark.parametrize("name", PASSING)
def test_backed_and_allowed_prose_passes(name):
    assert check(FIXTURES / f"{name}.ipynb") == []


def test_every_fixture_is_named():
    assert sorted(p.stem for p in FIXTURES.glob("*.ipynb")) == sorted([*CAUGHT, *PASSING])


def test_message_names_the_chapter_the_cell_the_text_and_the_fix():
    (violation,) = check(FIXTURES / "unpinned_number.ipynb")
    assert str(violation).startswith("unpinned_number cell 2: '102.2' in 'After 10 epochs")
    assert "fix: pin it: 102.2 as a literal of an assert" in str(violation)


@pytest.mark.parametrize("path", PAGES, ids=lambda p: p.stem)
def test_chapter_prose_states_no_unbacked_number(path):
    violations = check(path)
    assert not violations, f"{len(violations)} unbacked claims:\n" + "\n".join(map(str, violations))


# python tests/test_numbers.py [NN_name ...]: the report, page by page
if __name__ == "__main__":
    import sys

    for path in [p for p in PAGES if not sys.argv[1:] or p.stem in sys.argv[1:]]:
        violations = check(path)
        print(f"== {path.stem}: {len(violations)} unbacked", *violations, sep="\n")
