"""The layout: each option known in one module, small modules, tests through the public API."""

import ast
import typing
from pathlib import Path

import pytest

from vae_tutorial import config

PACKAGE = Path(config.__file__).parent
TESTS = Path(__file__).parent
OPTIONS = {  # option -> its vocabulary, read from the config module
    "kind": typing.get_args(config.Kind),
    "arch": typing.get_args(config.Arch),
    "binarize": typing.get_args(config.Binarize),
    "likelihood": typing.get_args(config.Likelihood),
}

DEFAULTS = {  # option -> its default, from the dataclass that holds it
    option: getattr(config.TrainConfig if option == "binarize" else config.ModelConfig, option)
    for option in OPTIONS
}


def modules() -> dict[str, ast.Module]:
    return {p.name: ast.parse(p.read_text()) for p in sorted(PACKAGE.glob("*.py"))}


def strings(node: ast.AST) -> set[str]:
    """The string constants directly inside a tuple, list, set, subscript or dict's keys."""
    items = node.keys if isinstance(node, ast.Dict) else getattr(node, "elts", None)
    if isinstance(node, ast.Subscript):
        items = getattr(node.slice, "elts", [node.slice])
    return {
        i.value for i in items or () if isinstance(i, ast.Constant) and isinstance(i.value, str)
    }


@pytest.mark.parametrize("option", OPTIONS)
def test_each_options_values_and_default_are_written_in_the_config_module_only(option):
    values = set(OPTIONS[option])
    for name, tree in modules().items():
        if name == "config.py":
            continue
        for node in ast.walk(tree):
            group = strings(node) & values
            assert len(group) < 2, f"{name}:{node.lineno} lists {option} values {sorted(group)}"
            if isinstance(node, ast.arguments):  # a parameter named after the option, defaulted
                named = node.args[len(node.args) - len(node.defaults) :] + node.kwonlyargs
                defaults = node.defaults + node.kw_defaults
                for arg, default in zip(named, defaults, strict=True):
                    literal = (
                        isinstance(default, ast.Constant) and default.value == DEFAULTS[option]
                    )
                    assert not (arg.arg == option and literal), f"{name}: {option} default"


def test_the_check_catches_a_vocabulary_written_again():
    tree = ast.parse('CHOICES = ("vae", "cvae")\ndef f(likelihood="bernoulli"): pass')
    assert any(len(strings(node) & set(OPTIONS["kind"])) == 2 for node in ast.walk(tree))


@pytest.mark.parametrize("path", sorted(PACKAGE.glob("*.py")), ids=lambda p: p.name)
def test_no_package_module_is_over_300_lines(path):
    assert len(path.read_text().splitlines()) <= 300


@pytest.mark.parametrize("path", sorted(TESTS.glob("test_*.py")), ids=lambda p: p.name)
def test_no_test_uses_a_private_name_of_the_package(path):
    tree = ast.parse(path.read_text())
    package_modules = {"vae_tutorial"} | {f"vae_tutorial.{p.stem}" for p in PACKAGE.glob("*.py")}
    local = {p.stem for p in PACKAGE.glob("*.py")}  # names a test binds to package modules
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in package_modules:
            private = [a.name for a in node.names if a.name.startswith("_") and a.name[-2:] != "__"]
            assert not private, f"{path.name}:{node.lineno} imports {private}"
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            hidden = node.attr.startswith("_") and not node.attr.endswith("_")
            assert not (node.value.id in local and hidden), (
                f"{path.name}:{node.lineno} uses {node.value.id}.{node.attr}"
            )


@pytest.mark.parametrize("document", ["README.md", "book/index.md"])
def test_the_module_tables_list_each_module_once(document):
    text = (TESTS.parent / document).read_text()
    table = text[text.index("| module | holds |") :].split("\n\n")[0].splitlines()[2:]
    listed = [row.split("`")[1] for row in table]
    files = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")
    assert sorted(listed) == files
