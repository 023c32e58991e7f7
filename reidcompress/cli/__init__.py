"""The ``reidcompress`` command line: one module per command, each a thin wrapper."""

from __future__ import annotations

import typer

from reidcompress import __version__

app = typer.Typer(
    name="reidcompress",
    help="Prune, fine-tune, export and verify person re-identification networks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"reidcompress {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
) -> None:
    """Prune, fine-tune, export and verify person re-identification networks."""


def _register() -> None:
    # Imported here so each command module can import `app`-free helpers without cycles.
    from reidcompress.cli import (
        bench,
        data,
        demo,
        evaluate,
        export,
        finetune,
        import_,
        info,
        methods,
        prune,
        sensitivity,
        train,
        verify,
    )

    app.add_typer(data.app, name="data")
    app.command("import")(import_.import_cmd)
    app.command("info")(info.info_cmd)
    app.command("evaluate")(evaluate.evaluate_cmd)
    app.command("train")(train.train_cmd)
    app.command("finetune")(finetune.finetune_cmd)
    app.command("prune")(prune.prune_cmd)
    app.command("sensitivity")(sensitivity.sensitivity_cmd)
    app.command("methods")(methods.methods_cmd)
    app.command("export")(export.export_cmd)
    app.command("verify")(verify.verify_cmd)
    app.command("bench")(bench.bench_cmd)
    app.command("demo")(demo.demo_cmd)


_register()


def main() -> None:
    app()
