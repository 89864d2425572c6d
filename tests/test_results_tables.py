"""The tables rendered from result files: a Markdown table's header rule, the speed table's row
order (classic, fit, floor, then fit's variants), and a chapter's number from its name."""

from vae_tutorial.results import Result, chapter_number, markdown_table, speed_table


def test_a_markdown_table_has_its_header_rule_and_padded_cells():
    lines = markdown_table(["a", "long name"], [["1", "2"], ["333", "4"]]).splitlines()
    assert lines == [
        "| a   | long name |",
        "| --- | --------- |",
        "| 1   | 2         |",
        "| 333 | 4         |",
    ]


def _row(loop, ms, batch=128, precision="fp32", compile_=False):
    return {"loop": loop, "batch_size": batch, "precision": precision, "compile": compile_} | {
        "ms_per_step": ms,
        "images_per_second": batch / ms * 1000,
        "epoch_seconds": ms * 0.468,
    }


def test_the_speed_table_lists_the_three_loops_in_order_then_the_variants():
    rows = [_row("floor", 1.0), _row("fit", 4.0, batch=512), _row("fit", 2.0), _row("classic", 9.0)]
    hardware = {"device": "cpu", "cpu_model": "Test CPU", "cpu_cores": 2, "gpu": None}
    result = Result(
        kind="train_speed",
        command="benchmarks/train_speed.py",
        config={},
        hardware=hardware | {"torch_threads": 2},
        date_utc="2026-01-02T03:04:05Z",
        complete=True,
        rows=rows,
    )
    body = speed_table(result).splitlines()[2:]
    cells = [[c.strip() for c in line.split("|")[1:3]] for line in body]
    assert cells == [
        ["classic DataLoader loop", "128"],
        ["fit, data on the device", "128"],
        ["floor: one fixed batch", "128"],
        ["fit, data on the device", "512"],
    ]


def test_a_chapters_number_is_its_leading_digits():
    assert chapter_number("faq") == "faq"  # a page of the book without a number
    assert [chapter_number(c) for c in ("01_autoencoders", "07_collapse", "10_evaluation")] == [
        1,
        7,
        10,
    ]
