"""Compile the query tree (``dicomcloud.domain.query``) to SQLAlchemy Core conditions.

One compiler for SQLite, PostgreSQL and MySQL/MariaDB; the only dialect difference is
how a wildcard pattern is written (PS3.4 C.2.2.2.4): SQLite's ``LIKE`` ignores ASCII case,
so there patterns become ``GLOB`` (case-sensitive, ``[x]`` quotes a wild character); the
others use ``LIKE`` with ``!`` as the escape character (a backslash would need quoting
rules that differ between MySQL and PostgreSQL).

Person names (PN) match as a whole or per component group
(``dicomcloud.domain.patterns.person_name_forms``); ``fuzzymatching`` matches the
folded form of the pattern (``dicomcloud.domain.patterns.fold``, case, accents, width)
against the folded copy of the name stored at ingest (``*_fuzzy`` columns), so that
every backend folds alike whatever the character set (SQLite's ``lower()`` knows only
ASCII).  The in-memory index states the same semantics in Python.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from dicomcloud.domain.extended_tags import ExtendedTag
from dicomcloud.domain.patterns import (
    Pattern,
    fold_pattern,
    literal,
    person_name_forms,
    render,
    wildcard,
)
from dicomcloud.domain.query import (
    INTEGER_VRS,
    MIDNIGHT,
    DateTimeRange,
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
from dicomcloud.domain.results import FOLDED, LEVEL_FIELDS, MODALITIES_IN_STUDY, PN
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
    column: ColumnElement[str], pattern: Pattern, dialect: str
) -> ColumnElement[bool]:
    if dialect == "sqlite":
        glob = sa.literal(_glob_text(pattern), sa.String())
        return column.op("GLOB", is_comparison=True)(glob)
    return column.like(sa.literal(_like_text(pattern), sa.String()), escape=_LIKE_ESCAPE)


def match_condition(
    node: Match,
    column: ColumnElement[str],
    vr: str,
    *,
    dialect: str,
    fuzzy: bool,
    folded: ColumnElement[str] | None = None,
) -> ColumnElement[bool] | None:
    """The WHERE condition of one matching key on ``column`` (None: no condition);
    ``folded`` is the column of the folded PN (fuzzy matching)."""
    if isinstance(node, Universal):
        return None
    assert not isinstance(node, DateTimeRange), "two columns: see date_time_condition"
    if isinstance(node, UidList):
        return column.in_(node.uids)
    if vr in INTEGER_VRS:  # parse_qido allows only single values here
        assert isinstance(node, SingleValue)
        return column == int(node.value)
    if isinstance(node, Range):
        if node.low is not None and node.high is not None and node.low > node.high:
            return sa.or_(column >= node.low, column <= node.high)  # across midnight (TM)
        bounds: list[ColumnElement[bool]] = []
        if node.low is not None:
            bounds.append(column >= node.low)
        if node.high is not None:
            bounds.append(column <= node.high)
        return sa.and_(*bounds)
    if vr != PN:
        if isinstance(node, SingleValue):
            return column == node.value
        assert isinstance(node, Wildcard)
        return _matches_pattern(column, wildcard(node.pattern), dialect)
    assert isinstance(node, SingleValue | Wildcard)
    pattern = literal(node.value) if isinstance(node, SingleValue) else wildcard(node.pattern)
    if fuzzy and folded is not None:  # PS3.4 C.2.2.2.6: fuzzy matching is for person names
        # Rows written without the folded copy (bulk loads) fall back to lower().
        column = sa.func.coalesce(folded, sa.func.lower(column))
        pattern = fold_pattern(pattern)
    forms = person_name_forms(pattern)
    first: ColumnElement[bool] = (
        column == "".join(p for p in pattern if isinstance(p, str))
        if isinstance(node, SingleValue)
        else _matches_pattern(column, forms[0], dialect)
    )
    return sa.or_(first, *(_matches_pattern(column, f, dialect) for f in forms[1:]))


def date_time_condition(
    node: DateTimeRange, date: ColumnElement[str], time: ColumnElement[str]
) -> ColumnElement[bool]:
    """Combined date-time range matching (PS3.4 C.2.2.2.5.1) on a DA and a TM column;
    the plain bounds on the date come first so that a date index still applies."""
    clock = sa.func.coalesce(time, MIDNIGHT)
    bounds: list[ColumnElement[bool]] = []
    if node.low is not None:
        low_date, low_time = node.low
        bounds += [date >= low_date, sa.or_(date > low_date, clock >= low_time)]
    if node.high is not None:
        high_date, high_time = node.high
        bounds += [date <= high_date, sa.or_(date < high_date, clock <= high_time)]
    return sa.and_(*bounds)


#: The UID column of each level an extended query tag may belong to.
_LEVEL_UID = {
    "study": "study_instance_uid",
    "series": "series_instance_uid",
    "instance": "sop_instance_uid",
}


def extended_condition(
    node: Match, tag: ExtendedTag, dialect: str, *, fuzzy: bool = False
) -> ColumnElement[bool] | None:
    """An extended query tag as a matching key: some value of it, in the record of its
    level, satisfies ``node`` (an EXISTS on ``extended_tag_value``); a PN tag matches
    its folded copy ``value_folded`` when ``fuzzy`` (PS3.4 C.2.2.2.6)."""
    values = schema.extended_tag_value
    column = values.c.value_number if tag.vr in INTEGER_VRS else values.c.value_string
    folded = values.c.value_folded if tag.vr == PN else None
    condition = match_condition(node, column, tag.vr, dialect=dialect, fuzzy=fuzzy, folded=folded)
    if condition is None:
        return None
    owner = TABLES[tag.level]
    return sa.exists().where(
        values.c.tenant_id == owner.c.tenant_id,
        values.c.level == tag.level,
        values.c.uid == owner.c[_LEVEL_UID[tag.level]],
        values.c.tag == tag.key,
        condition,
    )


def _column(query: Query, keyword: str) -> ColumnElement[str]:
    ref = LEVEL_FIELDS[query.level].get(keyword)
    if ref is None:
        raise QueryError(keyword, f"is not searchable at the {query.level.value} level")
    return TABLES[ref.level].c[ref.name]


def query_conditions(query: Query, dialect: str) -> Sequence[ColumnElement[bool]]:
    """The conditions of a query on the tables of its level joined with those of the
    levels above (``TABLES``; the patient is outer-joined)."""
    study, series = schema.study, schema.series
    fields = LEVEL_FIELDS[query.level]
    conditions: list[ColumnElement[bool]] = []
    extended = {tag.key: tag for tag in query.extended}
    for node in query.matches:
        tag = extended.get(node.keyword)
        if tag is not None:
            condition = extended_condition(node, tag, dialect, fuzzy=query.fuzzy)
            if condition is not None:
                conditions.append(condition)
            continue
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
        if isinstance(node, DateTimeRange):
            date, time = _column(query, node.keyword), _column(query, node.time_keyword)
            conditions.append(date_time_condition(node, date, time))
            continue
        ref = fields.get(node.keyword)
        if ref is None:
            raise QueryError(node.keyword, f"is not searchable at the {query.level.value} level")
        table = TABLES[ref.level]
        folded = table.c.get(ref.name + FOLDED) if ref.vr == PN else None
        condition = match_condition(
            node, table.c[ref.name], ref.vr, dialect=dialect, fuzzy=query.fuzzy, folded=folded
        )
        if condition is not None:
            conditions.append(condition)
    return conditions
