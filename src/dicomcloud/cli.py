"""The ``dicomcloud`` command: serve, import, migrate, check-config."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from dicomcloud import __version__
from dicomcloud.config import Settings, effective_config, load_settings
from dicomcloud.errors import ConfigurationError, DicomCloudError, NotDicom

app = typer.Typer(
    name="dicomcloud",
    help="An open-source cloud DICOM archive: DICOMweb and DIMSE.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="TOML settings file.", envvar="DICOMCLOUD_CONFIG"),
]
DataDirOption = Annotated[
    Path | None, typer.Option("--data-dir", help="Where the index and files live (./data).")
]


def _settings(config: Path | None, **overrides: object) -> Settings:
    try:
        return load_settings(config, **overrides)
    except ConfigurationError as exc:
        err_console.print(f"[bold red]error:[/] {exc.reason}")
        raise typer.Exit(2) from exc


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        format="%(name)s: %(message)s",
        handlers=[RichHandler(console=err_console, show_path=False, rich_tracebacks=False)],
        force=True,
    )
    # pynetdicom logs every PDU at INFO; keep it quiet unless debugging.
    if level != "DEBUG":
        for noisy in ("pynetdicom", "alembic"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


@app.command()
def serve(
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
    host: Annotated[str | None, typer.Option(help="Address to bind (127.0.0.1).")] = None,
    http_port: Annotated[int | None, typer.Option(help="DICOMweb port (8080).")] = None,
    dicom_port: Annotated[int | None, typer.Option(help="DICOM port (11112).")] = None,
    ae_title: Annotated[str | None, typer.Option(help="AE title (DICOMCLOUD).")] = None,
    workers: Annotated[
        int | None, typer.Option(help="Processes sharing the ports (0: one per core, max 4).")
    ] = None,
) -> None:
    """Run DICOMweb and DIMSE in one process."""
    settings = _settings(
        config,
        data_dir=data_dir,
        server__host=host,
        server__http_port=http_port,
        server__dicom_port=dicom_port,
        server__ae_title=ae_title,
        server__workers=workers,
    )
    configure_logging(settings.log_level)
    from dicomcloud.server import serve as serve_forever

    try:
        serve_forever(settings)
    except DicomCloudError as exc:
        err_console.print(f"[bold red]error:[/] {exc.reason}")
        raise typer.Exit(1) from exc
    except KeyboardInterrupt:
        pass


@app.command()
def migrate(config: ConfigOption = None, data_dir: DataDirOption = None) -> None:
    """Apply the index schema migrations (safe to run repeatedly)."""
    settings = _settings(config, data_dir=data_dir)
    from dicomcloud.config import redact_url
    from dicomcloud.index.migrate import migrate as run_migrations

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        asyncio.run(run_migrations(settings.index_url))
    except DicomCloudError as exc:
        err_console.print(f"[bold red]error:[/] {exc.reason}")
        raise typer.Exit(1) from exc
    console.print(f"[green]index schema is up to date[/] ({redact_url(settings.index_url)})")


@app.command("check-config")
def check_config(config: ConfigOption = None, data_dir: DataDirOption = None) -> None:
    """Print the effective configuration (secrets redacted); exit 2 if invalid."""
    settings = _settings(config, data_dir=data_dir)
    console.print_json(json.dumps(effective_config(settings), default=str))


@dataclass
class ImportSummary:
    counts: Counter[str] = field(default_factory=Counter)
    failures: list[tuple[str, str]] = field(default_factory=list)


def _walk(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            for root, _dirs, names in os.walk(path):
                files.extend(Path(root) / name for name in sorted(names))
        else:
            files.append(path)
    return files


@app.command("import")
def import_files(
    paths: Annotated[list[Path], typer.Argument(help="Files and folders to import.")],
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
    jobs: Annotated[int, typer.Option(help="Files stored concurrently.")] = 8,
) -> None:
    """Import DICOM files and folders (recursively) through the ingest service."""
    settings = _settings(config, data_dir=data_dir)
    configure_logging("WARNING" if settings.log_level == "INFO" else settings.log_level)
    missing = [p for p in paths if not p.exists()]
    if missing:
        err_console.print(f"[bold red]error:[/] no such file or folder: {missing[0]}")
        raise typer.Exit(2)
    files = _walk(paths)
    try:
        summary = asyncio.run(_import(settings, files, jobs))
    except DicomCloudError as exc:
        err_console.print(f"[bold red]error:[/] {exc.reason}")
        raise typer.Exit(1) from exc
    table = Table(title=f"Imported {len(files)} file(s)")
    table.add_column("result")
    table.add_column("files", justify="right")
    for key in ("stored", "replaced", "duplicate", "stored with warnings", "not DICOM", "failed"):
        table.add_row(key, str(summary.counts.get(key, 0)))
    console.print(table)
    if summary.failures:
        failures = Table(title="Not imported")
        failures.add_column("file")
        failures.add_column("reason")
        for name, reason in summary.failures[:200]:
            failures.add_row(name, reason)
        console.print(failures)
        if len(summary.failures) > 200:
            console.print(f"... and {len(summary.failures) - 200} more")
    if summary.counts.get("failed"):
        # Some DICOM file could not be imported (files that are not DICOM at all are
        # only reported): a script must be able to tell.
        raise typer.Exit(1)


async def _import(settings: Settings, files: list[Path], jobs: int) -> ImportSummary:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from dicomcloud.app import Archive
    from dicomcloud.domain.records import StoreOutcome
    from dicomcloud.services.ingest import IngestContext

    archive = await Archive.open(settings)
    await archive.start()
    summary = ImportSummary()
    context = IngestContext(tenant_id=settings.default_tenant, source="IMPORT")
    limiter = asyncio.Semaphore(max(1, jobs))
    try:
        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=err_console,
        ) as progress:
            task = progress.add_task("importing", total=len(files))

            async def one(path: Path) -> None:
                async with limiter:
                    result = await archive.ingest.store_part10(path, context)
                if isinstance(result.failure, NotDicom):
                    summary.counts["not DICOM"] += 1
                    summary.failures.append((str(path), result.failure.reason))
                elif result.failure is not None:
                    summary.counts["failed"] += 1
                    summary.failures.append((str(path), result.failure.reason))
                elif result.outcome is StoreOutcome.DUPLICATE:
                    summary.counts["duplicate"] += 1
                elif result.outcome is StoreOutcome.REPLACED:
                    summary.counts["replaced"] += 1
                else:
                    summary.counts["stored"] += 1
                    if result.warnings:
                        summary.counts["stored with warnings"] += 1
                progress.advance(task)

            await asyncio.gather(*(one(path) for path in files))
    finally:
        await archive.stop()
    return summary


def _version(value: bool) -> None:
    if value:
        console.print(f"dicomcloud {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show version.")
    ] = False,
) -> None:
    """dicomcloud: receive, keep, search and serve medical images."""


def main() -> None:
    app(prog_name="dicomcloud")


if __name__ == "__main__":
    main()
