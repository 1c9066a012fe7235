"""Pages of the documentation site generated at build time, so they never go stale.

- ``reference/cli.md``: every command and option of the ``lintwin`` Typer app, read from the app;
- ``reference/api/*.md``: one page per layer of ARCHITECTURE.md, one mkdocstrings block per module;
- ``benchmarks.md`` and ``architecture.md``: ``bench/README.md`` and ``ARCHITECTURE.md`` as pages.

MkDocs runs this file through the ``gen-files`` plugin (``mkdocs.yml``); the functions that make
the Markdown need no MkDocs, so the tests call them directly.
"""

from __future__ import annotations

import html
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import typer.main

from lintwin.cli import app

ROOT = Path(__file__).resolve().parents[1]

# The API reference, by layer (ARCHITECTURE.md): page, title, what the layer owns, its modules' package.
API_LAYERS = [
    ("front", "The fitting front", "The public fitting functions, the map object, the scikit-learn estimator, "
     "result objects and errors.", ["lintwin.api", "lintwin.affine", "lintwin.estimator", "lintwin.results",
                                    "lintwin.errors"]),
    ("core", "core", "Array namespaces and placement, the k-block moments accumulator, the pass driver, folds, "
     "settings checked once, memory budgets, safe paths and atomic files.", ["lintwin.core"]),
    ("storage", "storage", "The zarr feature store, stores as block sources, check, import, synthetic stores.",
     ["lintwin.storage"]),
    ("solvers", "solvers", "The scaled system factored once; least squares, ridge, ridge-CV, reduced rank, "
     "agreement-CV, the paper's Adam; moments to maps.", ["lintwin.solvers"]),
    ("measures", "measures", "Similarity measures, the permutation null, the bootstrap.", ["lintwin.measures"]),
    ("networks", "networks", "ONNX backbones and heads, whole models and their layers, images and "
     "preprocessing, extraction, head-only maps, stitching.", ["lintwin.networks"]),
    ("experiments", "experiments", "Table 1 and Fig. 5, scoring with heads, studies, pair similarity, reports, "
     "figures and tables, the demo.", ["lintwin.experiments"]),
]

_ROLE = re.compile(r":(?:class|meth|func|attr|mod|data|exc|obj):`~?([^`]+)`")


# -- the command line ------------------------------------------------------------------------------

def _md(text: str) -> str:
    """Help text as Markdown: outside code spans, HTML and emphasis characters escaped."""
    pieces = re.split(r"(`[^`]*`)", text)
    return "".join(p if p.startswith("`") else html.escape(p, quote=False).replace("*", r"\*").replace("_", r"\_")
                   for p in pieces)


def _code(text: str) -> str:
    """``text`` as one inline code span, whatever backticks it holds."""
    fence = "``" if "`" in text else "`"
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _first_paragraph(text: str | None) -> str:
    return " ".join((text or "").strip().split("\n\n")[0].split())


def _param_line(param, ctx) -> str:
    """One option or argument as ``--help`` prints it: names and value type, then its help and default."""
    record = param.get_help_record(ctx)
    if record is None:  # an argument without help text
        record = (param.name.upper(), "")
    names, help_text = record
    if param.param_type_name == "argument":  # "model <path>" → "MODEL <path>", as the usage line names it
        first, _, rest = names.partition(" ")
        names = f"{first.upper()} {rest}".strip()
    help_text = help_text.replace(str(ROOT), "<repository>")  # defaults that are paths into the repository
    return f"- {_code(names)}: {_md(help_text) or '(no help)'}"


def _usage(name: str, command, ctx) -> str:
    pieces = " ".join(command.collect_usage_pieces(ctx))
    return f"lintwin {name} " + re.sub(r"\{(\w+)\}", lambda m: m.group(1).upper(), pieces)


def _command_section(name: str, command, parent) -> str:
    ctx = command.context_class(command, info_name=name, parent=parent)
    args = [p for p in command.params if p.param_type_name == "argument"]
    opts = [p for p in command.params if p.param_type_name == "option"]
    parts = [f"## `lintwin {name}`", "", _md(inspect.cleandoc(command.help or "")), "",
             "```text", _usage(name, command, ctx), "```", ""]
    if args:
        parts += ["**Arguments**", "", *(_param_line(p, ctx) for p in args), ""]
    parts += ["**Options**", "", *(_param_line(p, ctx) for p in opts), "- `--help`: print this help and exit", ""]
    return "\n".join(parts)


def cli_commands() -> dict[str, object]:
    """The commands of the ``lintwin`` program (built from its Typer app), in the order ``--help`` lists them."""
    group = typer.main.get_command(app)
    ctx = group.context_class(group, info_name="lintwin")
    return {name: group.get_command(ctx, name) for name in group.list_commands(ctx)}


def cli_reference() -> str:
    """The CLI reference page: the program's options, then every command with its arguments and options."""
    group = typer.main.get_command(app)
    ctx = group.context_class(group, info_name="lintwin")
    commands = cli_commands()
    top = [p for p in group.params if p.param_type_name == "option"]
    lines = [
        "# Command-line reference",
        "",
        "Generated from the `lintwin` program itself when this site is built, so it lists every command and "
        "option of this version; `lintwin COMMAND --help` prints the same in a terminal.",
        "",
        "Every failure a user can cause ends in one line `Error: ...` on standard error and exit status 1 "
        "(usage errors, such as an unknown option: exit status 2), with no traceback, the store unchanged and "
        "nothing written outside the paths named; `tests/test_bad_inputs.py` runs such inputs through the "
        "command line and checks the exit status, the one line, and that every file is byte-identical "
        "afterwards.",
        "",
        "```text",
        "lintwin [OPTIONS] COMMAND [ARGS]...",
        "```",
        "",
        _md(_first_paragraph(group.help)),
        "",
        *(_param_line(p, ctx) for p in top),
        "- `--help`: print the list of commands and exit",
        "",
        "| command | what it does |",
        "| --- | --- |",
        *(f"| [`{n}`](#lintwin-{n}) | {_md(_first_paragraph(c.help))} |" for n, c in commands.items()),
        "",
    ]
    return "\n".join(lines) + "\n" + "\n".join(_command_section(n, c, ctx) for n, c in commands.items())


# -- the Python API --------------------------------------------------------------------------------

def _modules(package: str) -> list[str]:
    """``package`` itself when it is a module, else its public modules in name order."""
    mod = importlib.import_module(package)
    if not hasattr(mod, "__path__"):
        return [package]
    return [package] + sorted(f"{package}.{m.name}" for m in pkgutil.iter_modules(mod.__path__)
                              if not m.name.startswith("_"))


def api_modules() -> dict[str, list[str]]:
    """Page name → the modules documented on it."""
    return {page: [m for pkg in packages for m in _modules(pkg)] for page, _, _, packages in API_LAYERS}


def api_pages() -> dict[str, str]:
    """``reference/api/PAGE.md`` → its Markdown: an overview of ``import lintwin`` and one page per layer."""
    import lintwin

    modules = api_modules()
    where = {}
    for page, mods in modules.items():
        for name in mods:
            mod = importlib.import_module(name)
            for attr in getattr(mod, "__all__", []):
                where.setdefault(f"{name}.{attr}", page)
    rows = []
    for name in lintwin.__all__:
        obj = getattr(lintwin, name)
        home = f"{obj.__module__}.{name}"
        first = _ROLE.sub(r"`\1`", (obj.__doc__ or "").strip().split("\n\n")[0].replace("\n", " "))
        page = where.get(home) or next(p for p, mods in modules.items() if obj.__module__ in mods)
        rows.append(f"| [`lintwin.{name}`]({page}.md#{home}) | {_md(first)} |")
    index = [
        "# Python API",
        "",
        "Generated from the docstrings when the site is built. The names below are the public API, "
        "`import lintwin`; the pages that follow document every module, by the layers of the "
        "[architecture](../../architecture.md) (imports point down: `core` → `storage`, `solvers` → "
        "`measures` → the fitting front, `networks` → `experiments` → the command line).",
        "",
        "| name | what it is |",
        "| --- | --- |",
        *rows,
        "",
        "| page | modules |",
        "| --- | --- |",
        *(f"| [{title}]({page}.md) | {', '.join(f'`{m}`' for m in modules[page])} |"
          for page, title, _, _ in API_LAYERS),
        "",
    ]
    pages = {"index.md": "\n".join(index)}
    for page, title, owns, _ in API_LAYERS:
        body = [f"# {title}", "", owns, ""]
        for name in modules[page]:
            body += [f"::: {name}", ""]
        pages[f"{page}.md"] = "\n".join(body)
    return pages


# -- pages made from files elsewhere in the repository ----------------------------------------------

def benchmarks_page() -> str:
    """``bench/README.md`` as the site's benchmark page (its first heading renamed)."""
    text = (ROOT / "bench" / "README.md").read_text()
    first, _, rest = text.partition("\n")
    assert first.startswith("# "), "bench/README.md starts with its title"
    return ("# Benchmarks\n\n_This page is `bench/README.md`: the scripts are in `bench/`, their outputs in "
            "`bench/results/`._\n" + rest)


def architecture_page() -> str:
    """``ARCHITECTURE.md``, as it is."""
    return (ROOT / "ARCHITECTURE.md").read_text()


def generated_pages() -> dict[str, str]:
    """Every generated page: site path → Markdown."""
    pages = {"reference/cli.md": cli_reference(), "benchmarks.md": benchmarks_page(),
             "architecture.md": architecture_page()}
    pages |= {f"reference/api/{name}": text for name, text in api_pages().items()}
    return pages


def _write_with_gen_files() -> None:
    import mkdocs_gen_files

    for path, text in generated_pages().items():
        with mkdocs_gen_files.open(path, "w") as fh:
            fh.write(text)


if __name__ in {"__main__", "<run_path>"}:  # run by mkdocs-gen-files (``<run_path>``) or by hand
    _write_with_gen_files()
