"""QuerySpec → SQLAlchemy SELECT: the SQL half of the one query engine behind C-FIND and QIDO-RS."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column, ColumnElement, Select, and_, exists, false, func, or_, select

from dicomvault.adapters.index.tables import instances, patients, series, studies, study_qido
from dicomvault.domain.query import Condition, MatchKind, QuerySpec, wildcard_to_like
from dicomvault.domain.tags import BY_KEYWORD, INDEXED, Attribute, Level

_TABLE = {Level.PATIENT: patients, Level.STUDY: studies, Level.SERIES: series, Level.IMAGE: instances}
_SHADOWED_VRS = ("PN", "TM")


def match_column(attr: Attribute) -> Column[Any]:
    """The column a condition is evaluated on (the normalised shadow for PN and TM)."""
    table = _TABLE[attr.level]
    if attr.vr in _SHADOWED_VRS:
        return table.c[attr.column + "_n"]
    if attr.keyword == "AvailableTransferSyntaxUID":
        return instances.c.transfer_syntax_uid
    return table.c[attr.column]


def _int_or_none(value: str) -> int | None:
    try:
        return int(value)
    except ValueError:
        return None


def condition_clause(cond: Condition) -> ColumnElement[bool]:
    col = match_column(cond.attribute)
    attr = cond.attribute
    is_int = attr.vr in ("IS", "US", "UL", "SS", "SL")
    if attr.keyword == "ModalitiesInStudy":
        values = cond.values or (cond.value,)
        # Stored as "\\CT\\MR\\": each value is delimited by (escaped) backslashes in the LIKE pattern.
        return or_(*[col.like("%" + wildcard_to_like("\\" + v + "\\") + "%", escape="\\") for v in values])
    if cond.kind == MatchKind.SINGLE:
        if is_int:
            n = _int_or_none(cond.value)
            return col == n if n is not None else false()
        return col == cond.value
    if cond.kind in (MatchKind.UID_LIST, MatchKind.MULTI):
        if is_int:
            return col.in_([n for n in (_int_or_none(v) for v in cond.values) if n is not None])
        return col.in_(list(cond.values))
    if cond.kind == MatchKind.WILDCARD:
        if cond.fuzzy:
            # Fuzzy PN: the value is a prefix of any name component or word (family, given, middle…).
            prefix = wildcard_to_like(cond.value)
            return or_(
                col.like(prefix + "%", escape="\\"),
                col.like("%^" + prefix + "%", escape="\\"),
                col.like("% " + prefix + "%", escape="\\"),
                col.like("%=" + prefix + "%", escape="\\"),
            )
        if is_int:
            return col.is_not(None)
        if cond.ignore_case:  # ILIKE on PostgreSQL (served by the trigram indexes), lower() LIKE lower() elsewhere
            return col.ilike(wildcard_to_like(cond.value), escape="\\")
        return col.like(wildcard_to_like(cond.value), escape="\\")
    # RANGE
    clauses = []
    if cond.low is not None:
        clauses.append(col >= cond.low)
    if cond.high is not None:
        clauses.append(col <= cond.high)
    return and_(*clauses)


def _joined(level: Level) -> Any:
    """FROM clause for a level joined to all its parents."""
    if level == Level.PATIENT:
        return patients
    j = studies.join(patients, studies.c.patient_fk == patients.c.id)
    if level == Level.STUDY:
        return j
    j = series.join(j, series.c.study_fk == studies.c.id)
    if level == Level.SERIES:
        return j
    return instances.join(j, instances.c.series_fk == series.c.id)


def _exists_below(level: Level, lower: Level, clauses: list[ColumnElement[bool]]) -> ColumnElement[bool]:
    """EXISTS over child rows, for conditions on attributes below the query level (e.g. studies with Modality)."""
    chain: list[tuple[Any, Any]] = []  # (table, join condition to its parent)
    if level.depth < Level.STUDY.depth <= lower.depth:
        chain.append((studies, studies.c.patient_fk == patients.c.id))
    if level.depth < Level.SERIES.depth <= lower.depth:
        chain.append((series, series.c.study_fk == studies.c.id))
    if level.depth < Level.IMAGE.depth <= lower.depth:
        chain.append((instances, instances.c.series_fk == series.c.id))
    sub = select(chain[0][0].c.id)
    for table, _ in chain[1:]:
        sub = sub.select_from(table)
    conds = [c for _, c in chain] + clauses
    return exists(sub.where(and_(*conds)).correlate(_TABLE[level]))


def build_select(spec: QuerySpec) -> Select[Any]:
    """Every indexed column of the level and its parents for the rows matching ``spec``, in id order."""
    level = spec.level
    cols: list[Any] = [_TABLE[level].c.id.label("_id")]
    for attr in INDEXED:
        if attr.level.depth <= level.depth:
            if attr.keyword == "AvailableTransferSyntaxUID":
                cols.append(instances.c.transfer_syntax_uid.label(attr.keyword))
            else:
                cols.append(_TABLE[attr.level].c[attr.column].label(attr.keyword))
    if level == Level.IMAGE:
        cols.append(instances.c.metadata.label("_metadata"))
    return filtered_select(spec, cols)


def build_fragment_select(spec: QuerySpec) -> Select[Any]:
    """For a STUDY-level ``spec``: only what the cached-answer path needs (id, UID, cached default answer, the count
    it was built for, the current count). Five narrow columns instead of every indexed one: materialising the
    wide rows was most of the SQL side of a search with hundreds of results."""
    if spec.level != Level.STUDY:
        raise ValueError("cached answers exist at STUDY level only")
    cols = [studies.c.id.label("_id"), studies.c.study_uid, study_qido.c.answer,
            study_qido.c.num_instances.label("_built_for"), studies.c.num_instances]
    from_ = _joined(Level.STUDY).outerjoin(study_qido, study_qido.c.study_fk == studies.c.id)
    return filtered_select(spec, cols, from_)


def filtered_select(spec: QuerySpec, cols: list[Any], from_: Any = None) -> Select[Any]:
    """SELECT ``cols`` FROM the level joined to its parents (or ``from_``), WHERE the conditions of ``spec``, in id
    order, paged."""
    level = spec.level
    own: list[ColumnElement[bool]] = []
    below: dict[Level, list[ColumnElement[bool]]] = {}
    for cond in spec.conditions:
        lvl = cond.attribute.level
        if lvl.depth <= level.depth:
            own.append(condition_clause(cond))
        else:
            below.setdefault(lvl, []).append(condition_clause(cond))
    for lower, clauses in sorted(below.items(), key=lambda kv: kv[0].depth):
        own.append(_exists_below(level, lower, clauses))

    table = _TABLE[level]
    stmt = select(*cols).select_from(_joined(level) if from_ is None else from_)
    if own:
        stmt = stmt.where(and_(*own))
    if spec.after_id is not None:
        if spec.order_by is not None:
            raise ValueError("keyset paging walks in id order: not with order_by")
        stmt = stmt.where(table.c.id < spec.after_id if spec.descending else table.c.id > spec.after_id)
    order: list[Any] = [table.c.id]
    if spec.order_by is not None:
        order.insert(0, _order_column(level, spec.order_by))
    stmt = stmt.order_by(*(c.desc() for c in order) if spec.descending else order)
    if spec.limit is not None:
        stmt = stmt.limit(spec.limit)
    if spec.offset and spec.after_id is None:
        stmt = stmt.offset(spec.offset)
    return stmt


def _order_column(level: Level, keyword: str) -> Any:
    """The column a result is sorted on: an indexed attribute of ``level`` or a parent (PN by its normalised,
    indexed shadow, so that case and accents do not split the order)."""
    attr = BY_KEYWORD.get(keyword)
    if attr is None or attr.computed or attr.level.depth > level.depth:
        raise ValueError(f"cannot sort {level.value} results on {keyword}")
    return match_column(attr)


def representative_select(level: Level, row_ids: list[int]) -> Select[Any]:
    """(row id, cached DICOM JSON) of the first stored instance (lowest id, as ``representative_metadata``) of each
    STUDY or SERIES row in ``row_ids``: one statement for a page of rows, where the per-row path issued one query
    per result (a non-indexed key at study level over 1,000 studies was 1,001 statements)."""
    if level == Level.STUDY:
        owner = series.c.study_fk
        first = (select(owner.label("owner"), func.min(instances.c.id).label("first"))
                 .select_from(instances.join(series, instances.c.series_fk == series.c.id)))
    elif level == Level.SERIES:
        owner = instances.c.series_fk
        first = select(owner.label("owner"), func.min(instances.c.id).label("first"))
    else:
        raise ValueError("representative instances are chosen for STUDY and SERIES rows")
    firsts = first.where(owner.in_(row_ids)).group_by(owner).subquery()
    return select(firsts.c.owner, instances.c.metadata).select_from(
        firsts.join(instances, instances.c.id == firsts.c.first))
