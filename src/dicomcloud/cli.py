"""The ``dicomcloud`` command: serve, worker, import, delete, migrate, reindex, audit,
apikey, storage, viewer, check-config."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from dicomcloud import __version__
from dicomcloud.config import Settings, effective_config, load_settings
from dicomcloud.domain.access import AccessQuery, AccessRecord
from dicomcloud.errors import ConfigurationError, DicomCloudError, NotDicom

if TYPE_CHECKING:
    from dicomcloud.ports import DeleteRequest
    from dicomcloud.security.api_keys import ApiKeyStore
    from dicomcloud.services.deletion import DeleteSummary
    from dicomcloud.services.storage_gc import GcSummary
    from dicomcloud.storage.rotation import RotationSummary

T = TypeVar("T")

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
    role: Annotated[
        str | None,
        typer.Option(help="What this node does: web, dimse, worker (comma-separated; all)."),
    ] = None,
) -> None:
    """Run DICOMweb, DIMSE and the event workers (or the --role ones) in one process."""
    settings = _settings(
        config,
        data_dir=data_dir,
        server__host=host,
        server__http_port=http_port,
        server__dicom_port=dicom_port,
        server__ae_title=ae_title,
        server__workers=workers,
        server__roles=role,
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
def worker(
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
    consumer: Annotated[
        list[str] | None,
        typer.Option(
            "--consumer",
            help="Also run this consumer, package.module:attribute (repeatable).",
        ),
    ] = None,
    no_metadata: Annotated[
        bool, typer.Option("--no-metadata", help="Do not run the series metadata builder.")
    ] = False,
) -> None:
    """Run the event consumers (series metadata builder, your own) without serving."""
    settings = _settings(
        config, data_dir=data_dir, workers__metadata=False if no_metadata else None
    )
    configure_logging(settings.log_level)
    from dicomcloud.server import run_event_loop, run_workers

    try:
        run_event_loop(run_workers(settings, consumer or []))
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
    """Print the effective configuration (secrets redacted); exit 2 if invalid, or if
    ``serve`` would refuse it (a public address without ``auth.mode``)."""
    from dicomcloud.security.exposure import check_exposure

    settings = _settings(config, data_dir=data_dir)
    console.print_json(json.dumps(effective_config(settings), default=str))
    try:
        check_exposure(settings)
    except ConfigurationError as exc:
        err_console.print(f"[bold red]error:[/] {exc.reason}")
        raise typer.Exit(2) from exc


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


@app.command()
def reindex(
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
    batch: Annotated[int, typer.Option(min=1, max=5000, help="Instances per batch.")] = 200,
) -> None:
    """Fill the search columns (includefield attributes, folded names, extended query
    tags) of instances stored before they existed or were configured, from the stored
    files."""
    settings = _settings(config, data_dir=data_dir)
    configure_logging("WARNING" if settings.log_level == "INFO" else settings.log_level)
    try:
        done, failures = asyncio.run(_reindex(settings, batch))
    except DicomCloudError as exc:
        err_console.print(f"[bold red]error:[/] {exc.reason}")
        raise typer.Exit(1) from exc
    console.print(f"[green]reindexed {done} instance(s)[/]")
    for key, reason in failures[:200]:
        err_console.print(f"[bold red]not reindexed:[/] {key}: {reason}")
    if failures:
        raise typer.Exit(1)


async def _reindex(settings: Settings, batch: int) -> tuple[int, list[tuple[str, str]]]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from dicomcloud.app import open_blobs
    from dicomcloud.index.engine import create_engine_for
    from dicomcloud.index.migrate import migrate_engine
    from dicomcloud.index.sql_index import SqlIndex
    from dicomcloud.services.reindex import reindex as run_reindex

    engine = create_engine_for(settings.index_url, pool_size=settings.index.pool_size)
    await migrate_engine(engine)  # the columns to fill: migrations 0002, 0004, 0008
    index = SqlIndex(engine, settings.search.extended_tags())
    blobs = open_blobs(settings, settings.storage_url, fsync=False)
    try:
        total = await index.count_all_instances()
        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=err_console,
        ) as progress:
            task = progress.add_task("reindexing", total=total)
            summary = await run_reindex(
                index, blobs, batch=batch, progress=lambda n: progress.advance(task, n)
            )
    finally:
        await index.close()
    return summary.reindexed, summary.failures


@app.command()
def delete(
    study: Annotated[str, typer.Option("--study", help="StudyInstanceUID to delete (in).")],
    series: Annotated[
        str | None, typer.Option("--series", help="Only this series of the study.")
    ] = None,
    instance: Annotated[
        str | None, typer.Option("--instance", help="Only this instance (needs --series).")
    ] = None,
    tenant: Annotated[str | None, typer.Option(help="Tenant (default_tenant).")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Delete a study, a series or an instance for good: index rows, then the stored
    files and metadata (as DICOMweb DELETE; refused with [retention] allow_delete =
    false).  An instance.deleted event per instance waits in the outbox for the
    server's relay."""
    from dicomcloud.domain.values import InvalidValue, is_valid_uid, parse_tenant_id

    settings = _settings(config, data_dir=data_dir)
    configure_logging("WARNING" if settings.log_level == "INFO" else settings.log_level)
    for option, uid in (("--study", study), ("--series", series), ("--instance", instance)):
        if uid is not None and not is_valid_uid(uid):
            err_console.print(f"[bold red]error:[/] {option}: {uid!r} is not a valid UID")
            raise typer.Exit(2)
    if instance is not None and series is None:
        err_console.print("[bold red]error:[/] --instance needs --series")
        raise typer.Exit(2)
    try:
        tenant_id = parse_tenant_id(tenant) if tenant is not None else settings.default_tenant
    except InvalidValue as exc:
        err_console.print(f"[bold red]error:[/] --tenant: {exc}")
        raise typer.Exit(2) from exc
    if not settings.retention.allow_delete:
        err_console.print(
            "[bold red]error:[/] deletion is disabled on this archive "
            "([retention] allow_delete = false)"
        )
        raise typer.Exit(1)
    target = DeleteTarget(tenant_id, study, series, instance)
    try:
        summary = asyncio.run(_delete(settings, target, confirm=not yes))
    except DicomCloudError as exc:
        err_console.print(f"[bold red]error:[/] {exc.reason}")
        raise typer.Exit(1) from exc
    if summary is None:
        err_console.print("[yellow]nothing deleted[/]")
        raise typer.Exit(1)
    table = Table(title=f"deleted from tenant {tenant_id}")
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_row("instances", str(summary.instances))
    table.add_row("series emptied", str(len(summary.removed_series)))
    table.add_row("study removed", "yes" if summary.study_removed else "no")
    table.add_row("patient removed", "yes" if summary.patient_removed else "no")
    table.add_row("files removed", str(summary.blobs_removed))
    console.print(table)
    if summary.blobs_failed:
        err_console.print(
            f"[bold red]{len(summary.blobs_failed)} file(s) could not be removed[/] "
            "(orphans; the index no longer names them):"
        )
        for key in summary.blobs_failed[:200]:
            err_console.print(f"  {key}")
        raise typer.Exit(1)


@dataclass(frozen=True)
class DeleteTarget:
    """What ``dicomcloud delete`` was asked to delete."""

    tenant_id: str
    study: str
    series: str | None
    instance: str | None

    def describe(self) -> str:
        if self.instance is not None:
            return f"instance {self.instance} of series {self.series} of study {self.study}"
        if self.series is not None:
            return f"series {self.series} of study {self.study}"
        return f"study {self.study}"


if TYPE_CHECKING:
    from dicomcloud.services.deletion import DeleteSummary


async def _delete(
    settings: Settings, target: DeleteTarget, *, confirm: bool
) -> DeleteSummary | None:
    from dicomcloud.app import Archive
    from dicomcloud.errors import NotFound
    from dicomcloud.ports import DeleteRequest

    archive = await Archive.open(settings)
    try:
        records = await archive.index.list_instances(target.tenant_id, target.study, target.series)
        if target.instance is not None:
            records = [r for r in records if r.sop_instance_uid == target.instance]
        if not records:
            err_console.print(f"{target.describe()}: not found in tenant {target.tenant_id}")
            return None
        if confirm:
            series = len({r.series_instance_uid for r in records})
            question = (
                f"Delete {target.describe()} of tenant {target.tenant_id}: "
                f"{len(records)} instance(s) in {series} series, for good?"
            )
            if not await asyncio.to_thread(typer.confirm, question):
                err_console.print("aborted")
                return None
        request = DeleteRequest(
            target.tenant_id,
            target.study,
            target.series,
            target.instance,
            source="CLI",
            principal=os.environ.get("USER") or None,
        )
        started = time.monotonic()
        try:
            summary = await archive.deletion.delete(request)
        except NotFound as exc:
            err_console.print(f"{exc.reason} (deleted meanwhile?)")
            return None
        if settings.audit.enabled:
            await archive.access_store.append([_delete_record(request, summary, started)])
        return summary
    finally:
        await archive.stop()


def _delete_record(request: DeleteRequest, summary: DeleteSummary, started: float) -> AccessRecord:
    """The access-log record of a ``dicomcloud delete`` (as DICOMweb DELETE records)."""
    from dicomcloud.domain import access
    from dicomcloud.domain.events import node_id, uuid7

    return AccessRecord(
        event_id=str(uuid7()),
        time=datetime.now(UTC),
        node_id=node_id(),
        protocol=access.CLI,
        action=access.DELETE,
        tenant_id=request.tenant_id,
        principal=request.principal or access.ANONYMOUS,
        peer=None,
        status=0,
        outcome="success" if not summary.blobs_failed else "warning",
        duration_ms=(time.monotonic() - started) * 1000,
        study_uids=(request.study_instance_uid,),
        series_uids=summary.series_instance_uids[: access.MAX_UIDS],
        sop_instance_uids=summary.sop_instance_uids[: access.MAX_UIDS],
        instances=summary.instances,
        detail=f"dicomcloud delete: {summary.instances} instance(s)",
    ).clipped()


apikey_app = typer.Typer(
    help="API keys for machines: create (the key is shown once), list, revoke.",
    no_args_is_help=True,
)
app.add_typer(apikey_app, name="apikey")


async def _with_api_keys(settings: Settings, use: Callable[[ApiKeyStore], Awaitable[T]]) -> T:
    from dicomcloud.index.engine import create_engine_for
    from dicomcloud.index.migrate import migrate_engine
    from dicomcloud.index.unit_of_work import runner_for
    from dicomcloud.security.api_keys import ApiKeyStore

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = create_engine_for(settings.index_url, pool_size=1)
    runner = runner_for(engine)
    try:
        await migrate_engine(engine)  # the api_key table comes with migration 0005
        return await use(ApiKeyStore(runner))
    finally:
        await runner.close()
        await engine.dispose()


def _run_api_keys(settings: Settings, use: Callable[[ApiKeyStore], Awaitable[T]]) -> T:
    try:
        return asyncio.run(_with_api_keys(settings, use))
    except DicomCloudError as exc:
        err_console.print(f"[bold red]error:[/] {exc.reason}")
        raise typer.Exit(1) from exc


@apikey_app.command("create")
def apikey_create(
    permissions: Annotated[str, typer.Option(help="Comma-separated: read, write, delete, admin.")],
    name: Annotated[str, typer.Option(help="What the key is for (shown in list).")],
    tenant: Annotated[str | None, typer.Option(help="Tenant (default_tenant).")] = None,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Create an API key and print it once: only its hash is stored."""
    from dicomcloud.config import TENANT_PATTERN
    from dicomcloud.security.principal import Permission

    settings = _settings(config, data_dir=data_dir)
    try:
        granted = Permission.parse_list(permissions)
    except ValueError as exc:
        err_console.print(f"[bold red]error:[/] --permissions: {exc}")
        raise typer.Exit(2) from exc
    tenant_id = tenant or settings.default_tenant
    if not TENANT_PATTERN.match(tenant_id):
        err_console.print(f"[bold red]error:[/] --tenant: {tenant_id!r} is not a tenant identifier")
        raise typer.Exit(2)
    if not name.strip() or len(name) > 128:
        err_console.print("[bold red]error:[/] --name: 1-128 characters")
        raise typer.Exit(2)
    key, text = _run_api_keys(settings, lambda store: store.create(tenant_id, granted, name))
    err_console.print(
        f"API key {key.key_id} for tenant {key.tenant_id}"
        f" ({', '.join(sorted(p.value for p in key.permissions))}); store it now,"
        " it cannot be shown again:"
    )
    print(text)


@apikey_app.command("list")
def apikey_list(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's keys.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table.")] = False,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """List API keys (never their secrets), revoked ones too."""
    from dicomcloud.security.api_keys import describe

    settings = _settings(config, data_dir=data_dir)
    rows = describe(_run_api_keys(settings, lambda store: store.list(tenant)))
    if as_json:
        print(json.dumps(rows))
        return
    table = Table(title="API keys")
    for column in ("id", "tenant", "name", "permissions", "created", "revoked", "last used"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*row.values())
    console.print(table)


@apikey_app.command("revoke")
def apikey_revoke(
    key_id: Annotated[str, typer.Argument(help="The id shown by create and list.")],
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Revoke an API key: every later request with it is refused (401)."""
    settings = _settings(config, data_dir=data_dir)
    if not _run_api_keys(settings, lambda store: store.revoke(key_id)):
        err_console.print(f"[bold red]error:[/] no API key {key_id!r} that is not yet revoked")
        raise typer.Exit(1)
    console.print(f"API key {key_id} revoked")


def _since(text: str) -> datetime:
    """``30m``, ``24h``, ``7d`` ago, or an ISO 8601 date / date-time (UTC by default)."""
    from dicomcloud.dicomweb.admin import parse_time

    units = {"m": 60, "h": 3600, "d": 86400}
    if text[:-1].isdigit() and text[-1:] in units:
        return datetime.now(UTC) - timedelta(seconds=int(text[:-1]) * units[text[-1]])
    return parse_time("--since", text)


@app.command()
def audit(
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant.")] = None,
    since: Annotated[
        str | None, typer.Option(help="From this time: 30m, 24h, 7d, or ISO 8601 (UTC).")
    ] = None,
    action: Annotated[
        str | None, typer.Option(help="e.g. 'QIDO-RS search', C-FIND, association.")
    ] = None,
    principal: Annotated[str | None, typer.Option(help="User, subject or AE title.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="Most records shown.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines, not a table.")] = False,
) -> None:
    """Show the access log (audit trail), newest first."""
    settings = _settings(config, data_dir=data_dir)
    try:
        query = AccessQuery(
            tenant_id=tenant,
            since=_since(since) if since else None,
            action=action,
            principal=principal,
            limit=limit,
        )
        records = asyncio.run(_access_records(settings, query))
    except DicomCloudError as exc:
        err_console.print(f"[bold red]error:[/] {exc.reason}")
        raise typer.Exit(1 if exc.http_status >= 500 else 2) from exc
    if as_json:
        for record in records:
            typer.echo(record.to_json())
        return
    table = Table(title=f"Access log: {len(records)} record(s), newest first")
    for column in ("time (UTC)", "tenant", "principal", "peer", "action", "resource"):
        table.add_column(column)
    for column in ("status", "in", "out", "ms"):
        table.add_column(column, justify="right")
    for record in records:
        uids = record.study_uids
        resource = uids[0] if len(uids) == 1 else (f"{len(uids)} studies" if uids else "")
        if record.instances > 1:
            resource = f"{resource} ({record.instances} instances)".strip()
        status = f"0x{record.status:04X}" if record.protocol == "DIMSE" else str(record.status)
        table.add_row(
            record.time.strftime("%Y-%m-%d %H:%M:%S"),
            record.tenant_id,
            record.principal,
            record.peer or "",
            record.action,
            resource,
            status,
            str(record.bytes_in),
            str(record.bytes_out),
            f"{record.duration_ms:.0f}",
        )
    console.print(table)


async def _access_records(settings: Settings, query: AccessQuery) -> list[AccessRecord]:
    from dicomcloud.index.access_log import SqlAccessLog
    from dicomcloud.index.engine import create_engine_for
    from dicomcloud.index.migrate import migrate_engine
    from dicomcloud.index.sql_index import SqlIndex

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = create_engine_for(settings.index_url, pool_size=2)
    await migrate_engine(engine)
    index = SqlIndex(engine)
    try:
        return list(await SqlAccessLog(index.runner).search(query))
    finally:
        await index.close()


viewer_app = typer.Typer(help="The OHIF viewer served at /viewer/.", no_args_is_help=True)
app.add_typer(viewer_app, name="viewer")


def _default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dicomcloud"


@viewer_app.command("install")
def viewer_install(
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
    version: Annotated[
        str | None,
        typer.Option(
            help="Viewer version (viewer.version): 3.x is OHIF 3 (@ohif/app, default "
            "3.13.2), 4.x OHIF v2's standalone viewer (@ohif/viewer 4.12.51)."
        ),
    ] = None,
    registry: Annotated[
        str | None, typer.Option(help="npm registry (viewer.registry, registry.npmjs.org).")
    ] = None,
    cache_dir: Annotated[
        Path | None,
        typer.Option(help="Where verified tarballs are kept ($XDG_CACHE_HOME/dicomcloud)."),
    ] = None,
    dicomweb: Annotated[
        str,
        typer.Option(
            help="The DICOMweb root the viewer uses, relative to /viewer/ or absolute "
            "(a tenant's root, or another server's)."
        ),
    ] = "../dicom-web",
    tenant: Annotated[
        str | None,
        typer.Option(help="Point the viewer at this tenant's /tenants/{tenant}/dicom-web."),
    ] = None,
) -> None:
    """Fetch the OHIF viewer from npm (@ohif/app for OHIF 3, @ohif/viewer for v2),
    verify its sha512, unpack it into viewer.dir ({data_dir}/viewer) and point it at
    this server's DICOMweb root."""
    settings = _settings(
        config, data_dir=data_dir, viewer__version=version, viewer__registry=registry
    )
    from dicomcloud.config import TENANT_PATTERN
    from dicomcloud.ui.viewer_bundle import install, package_of

    if tenant is not None:
        if not TENANT_PATTERN.match(tenant):
            err_console.print(f"[bold red]error:[/] --tenant: {tenant!r} is not a tenant id")
            raise typer.Exit(2)
        dicomweb = f"../tenants/{tenant}/dicom-web"
    target = settings.viewer_dir
    started = time.perf_counter()
    try:
        dist = install(
            target,
            version=settings.viewer.version,
            registry=settings.viewer.registry,
            cache_dir=cache_dir or _default_cache(),
            dicomweb=dicomweb,
        )
    except DicomCloudError as exc:
        err_console.print(f"[bold red]error:[/] {exc.reason}")
        raise typer.Exit(1) from exc
    seconds = time.perf_counter() - started
    size = sum(path.stat().st_size for path in target.rglob("*") if path.is_file())
    console.print(
        f"[green]OHIF viewer {dist.version} installed[/] ({package_of(dist.version)}) "
        f"in {target} (integrity {dist.integrity[:19]}..., {size / 1e6:.0f} MB on disk, "
        f"{seconds:.1f} s); served at /viewer/ for {dicomweb}"
    )


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


storage_app = typer.Typer(
    help="Stored objects: encryption keys, garbage collection.", no_args_is_help=True
)
app.add_typer(storage_app, name="storage")


@storage_app.command("rotate-keys")
def rotate_keys(config: ConfigOption = None, data_dir: DataDirOption = None) -> None:
    """Re-encrypt every stored object (instances and metadata) not under
    storage.encryption.active_key_id; objects stored before encryption was enabled are
    encrypted.  Safe to interrupt and run again."""
    settings = _settings(config, data_dir=data_dir)
    configure_logging("WARNING" if settings.log_level == "INFO" else settings.log_level)
    if not settings.storage.encryption.enabled:
        err_console.print(
            "[bold red]error:[/] encryption is not enabled "
            "(set storage.encryption.active_key_id and keys)"
        )
        raise typer.Exit(2)
    try:
        summary = asyncio.run(_rotate(settings))
    except DicomCloudError as exc:
        err_console.print(f"[bold red]error:[/] {exc.reason}")
        raise typer.Exit(1) from exc
    console.print(
        f"[green]re-encrypted {summary.rotated} object(s)[/] with key "
        f"{settings.storage.encryption.active_key_id!r}; {summary.current} already were"
    )
    for key, reason in summary.failures[:200]:
        err_console.print(f"[bold red]not re-encrypted:[/] {key}: {reason}")
    if summary.failures:
        raise typer.Exit(1)


async def _rotate(settings: Settings) -> RotationSummary:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress

    from dicomcloud.config import redact_url
    from dicomcloud.storage import EncryptedBlobStore, FilesystemBlobStore, open_blob_store
    from dicomcloud.storage.rotation import RotationSummary, rotate_keys

    total = RotationSummary()
    encryption = settings.storage.encryption
    for url in (settings.storage_url, settings.metadata_url):
        store = open_blob_store(url, fsync=settings.storage.fsync, encryption=encryption)
        assert isinstance(store, EncryptedBlobStore)
        inner = store.inner
        if not isinstance(inner, FilesystemBlobStore):
            raise ConfigurationError(
                f"rotate-keys lists the objects of file:// stores only, not {redact_url(url)}"
            )
        keys = list(inner.iter_keys())
        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            console=err_console,
        ) as progress:
            task = progress.add_task("re-encrypting", total=len(keys))
            summary = await rotate_keys(store, keys, progress=partial(progress.advance, task))
        total.rotated += summary.rotated
        total.current += summary.current
        total.failures += summary.failures
    return total


@storage_app.command("gc")
def storage_gc(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant (default: all).")] = None,
    older_than: Annotated[
        float,
        typer.Option(
            "--older-than",
            min=0,
            help="Grace period in seconds: files written more recently are kept (a store "
            "in progress may still commit them).",
        ),
    ] = 3600.0,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List the orphans, remove nothing.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    config: ConfigOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Remove stored files that no index row references (left by a deletion whose file
    removals failed, or by an interrupted store) and metadata of series gone from the
    index, once older than --older-than seconds."""
    from dicomcloud.domain.values import InvalidValue, parse_tenant_id

    settings = _settings(config, data_dir=data_dir)
    configure_logging("WARNING" if settings.log_level == "INFO" else settings.log_level)
    try:
        tenant_id = parse_tenant_id(tenant) if tenant is not None else None
    except InvalidValue as exc:
        err_console.print(f"[bold red]error:[/] --tenant: {exc}")
        raise typer.Exit(2) from exc
    try:
        summaries = asyncio.run(
            _storage_gc(settings, tenant_id, older_than, dry_run=dry_run, confirm=not yes)
        )
    except DicomCloudError as exc:
        err_console.print(f"[bold red]error:[/] {exc.reason}")
        raise typer.Exit(1) from exc
    if summaries is None:
        raise typer.Exit(1)
    table = Table(title="storage gc" + (" (dry run: nothing removed)" if dry_run else ""))
    for column in ("store", "scanned", "orphans", "bytes", "removed", "failed", "kept (young)"):
        table.add_column(column, justify="left" if column == "store" else "right")
    for summary in summaries:
        table.add_row(
            summary.store,
            str(summary.scanned),
            str(len(summary.orphans)),
            str(summary.found_bytes),
            str(summary.removed),
            str(len(summary.failed)),
            str(summary.young),
        )
    console.print(table)
    failed = [key for summary in summaries for key in summary.failed]
    for key in failed[:200]:
        err_console.print(f"[bold red]not removed:[/] {key}")
    if failed:
        raise typer.Exit(1)


async def _storage_gc(
    settings: Settings,
    tenant_id: str | None,
    older_than: float,
    *,
    dry_run: bool,
    confirm: bool,
) -> list[GcSummary] | None:
    from dicomcloud.app import Archive
    from dicomcloud.config import redact_url
    from dicomcloud.index.sql_index import SqlIndex
    from dicomcloud.services.storage_gc import StorageCollector

    archive = await Archive.open(settings)
    try:
        collectors = [
            StorageCollector(
                archive.index,
                archive.blobs,
                name="instances",
                copies_in_index=isinstance(archive.index, SqlIndex),
                older_than=older_than,
            ),
            StorageCollector(
                archive.index,
                archive.metadata.store,
                name="metadata",
                metadata=True,
                older_than=older_than,
            ),
        ]
        found = [await c.collect(tenant_id, dry_run=True) for c in collectors]
        orphans = [o for summary in found for o in summary.orphans]
        index = archive.index
        if (
            orphans
            and not dry_run
            and isinstance(index, SqlIndex)
            and await index.count_all_instances() == 0
        ):
            # Most likely the wrong index (another --config, a new empty database):
            # every file would look like an orphan.
            raise ConfigurationError(
                f"the index ({redact_url(settings.index_url)}) holds no instance at all, "
                f"yet the storage holds {len(orphans)} file(s): is this the right "
                "configuration? Nothing was removed (remove the files by hand if the "
                "archive really is empty)"
            )
        if dry_run or not orphans:
            for orphan in orphans[:1000]:
                console.print(f"{orphan.kind.value}\t{orphan.size}\t{orphan.key}")
            return found
        if confirm:
            size = sum(o.size for o in orphans)
            question = f"Remove {len(orphans)} unreferenced file(s), {size} bytes, for good?"
            if not await asyncio.to_thread(typer.confirm, question):
                err_console.print("aborted")
                return None
        # Scanned again: each object is checked against the index right before removal.
        return [await c.collect(tenant_id) for c in collectors]
    finally:
        await archive.stop()


def main() -> None:
    app(prog_name="dicomcloud")


if __name__ == "__main__":
    main()
