"""Compile the query tree (``dicomcloud.domain.query``) to SQLAlchemy Core conditions.

One compiler for SQLite, PostgreSQL and MySQL/MariaDB; the only dialect difference is
how a wildcard pattern is written (PS3.4 C.2.2.2.4): SQLite's ``LIKE`` ignores ASCII case,
so there patterns become ``GLOB`` (case-sensitive, ``[x]`` quotes a wild character); the
others use ``LIKE`` with ``!`` as the escape character (a backslash would need quoting
rules that differ between MySQL and PostgreSQL).

Person names (PN) match as a whole or per component group
(``dicomcloud.domain.patterns.person_name_forms``); ``fuzzymatching`` compares PN values
with ``lower()`` on both sides.  The in-memory index states the same semantics in Python.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from dicomcloud.domain.patterns import Pattern, literal, person_name_forms, render, wildcard
from dicomcloud.domain.query import (
    INTEGER_VRS,
    Match,
    Query,
    QueryError,
    QueryLevel,
    Range,
    SingleValue,
    UidList,
    Universal,
    Wildcard,
)
from dicomcloud.domain.results import LEVEL_FIELDS, MODALITIES_IN_STUDY, PN
from dicomcloud.index import schema

__all__ = ["TABLES", "match_condition", "query_conditions"]

#: The table of each record level (``FieldRef.level``).
TABLES: dict[str, sa.Table] = {
    "patient": schema.patient,
    "study": schema.study,
    "series": schema.series,
    "instance": schema.instance,
}

_LIKE_ESCAPE = "!"
_LIKE_SPECIAL = frozenset("!%_")
_GLOB_SPECIAL = frozenset("*?[")


def _like_text(pattern: Pattern) -> str:
    def escape(text: str) -> str:
        return "".join(_LIKE_ESCAPE + c if c in _LIKE_SPECIAL else c for c in text)

    return render(pattern, any_="%", one="_", literal=escape)


def _glob_text(pattern: Pattern) -> str:
    def escape(text: str) -> str:
        return "".join(f"[{c}]" if c in _GLOB_SPECIAL else c for c in text)

    return render(pattern, any_="*", one="?", literal=escape)


def _matches_pattern(
    column: ColumnElement[str], pattern: Pattern, dialect: str, fuzzy: bool
) -> ColumnElement[bool]:
    subject: ColumnElement[str] = sa.func.lower(column) if fuzzy else column
    if dialect == "sqlite":
        text: ColumnElement[str] = sa.literal(_glob_text(pattern), sa.String())
        if fuzzy:
            text = sa.func.lower(text)
        return subject.op("GLOB", is_comparison=True)(text)
    text = sa.literal(_like_text(pattern), sa.String())
    if fuzzy:
        text = sa.func.lower(text)
    return subject.like(text, escape=_LIKE_ESCAPE)


def match_condition(
    node: Match, column: ColumnElement[str], vr: str, *, dialect: str, fuzzy: bool
) -> ColumnElement[bool] | None:
    """The WHERE condition of one matching key on ``column`` (None: no condition)."""
    if isinstance(node, Universal):
        return None
    if isinstance(node, UidList):
        return column.in_(node.uids)
    if vr in INTEGER_VRS:  # parse_qido allows only single values here
        assert isinstance(node, SingleValue)
        return column == int(node.value)
    if isinstance(node, Range):
        bounds: list[ColumnElement[bool]] = []
        if node.low is not None:
            bounds.append(column >= node.low)
        if node.high is not None:
            bounds.append(column <= node.high)
        return sa.and_(*bounds)
    fuzzy = fuzzy and vr == PN  # PS3.4 C.2.2.2.6: fuzzy matching is for person names
    if isinstance(node, SingleValue):
        if vr != PN:
            return column == node.value
        forms = person_name_forms(literal(node.value))
        exact = (
            sa.func.lower(column) == sa.func.lower(sa.literal(node.value, sa.String()))
            if fuzzy
            else column == node.value
        )
        return sa.or_(exact, *(_matches_pattern(column, f, dialect, fuzzy) for f in forms[1:]))
    assert isinstance(node, Wildcard)
    pattern = wildcard(node.pattern)
    forms = person_name_forms(pattern) if vr == PN else [pattern]
    return sa.or_(*(_matches_pattern(column, f, dialect, fuzzy) for f in forms))


def query_conditions(query: Query, dialect: str) -> Sequence[ColumnElement[bool]]:
    """The conditions of a query on the tables of its level joined with those of the
    levels above (``TABLES``; the patient is outer-joined)."""
    study, series = schema.study, schema.series
    fields = LEVEL_FIELDS[query.level]
    conditions: list[ColumnElement[bool]] = []
    for node in query.matches:
        if node.keyword == MODALITIES_IN_STUDY and query.level is QueryLevel.STUDY:
            condition = match_condition(
                node, series.c.modality, "CS", dialect=dialect, fuzzy=query.fuzzy
            )
            if condition is not None:
                conditions.append(
                    sa.exists().where(
                        series.c.tenant_id == study.c.tenant_id,
                        series.c.study_instance_uid == study.c.study_instance_uid,
                        condition,
                    )
                )
            continue
        ref = fields.get(node.keyword)
        if ref is None:
            raise QueryError(node.keyword, f"is not searchable at the {query.level.value} level")
        column = TABLES[ref.level].c[ref.name]
        condition = match_condition(node, column, ref.vr, dialect=dialect, fuzzy=query.fuzzy)
        if condition is not None:
            conditions.append(condition)
    return conditions
