"""The Index port contract, asserted on every backend: memory, SQLite, PostgreSQL, MySQL.

Each test gets a fresh, migrated, empty database (fixture ``index`` in tests/backends.py).
"""

from __future__ import annotations

import asyncio

import pytest

from backends import IndexUnderTest as Index
from dicomcloud.domain.events import StoredEvent
from dicomcloud.domain.records import DuplicatePolicy, StoreOutcome
from dicomcloud.errors import IdentityConflict
from dicomcloud.ports import InstanceWrite, LevelCounts

from .records import FULL_INSTANCE, SERIES, STUDY, sop_uid, write

KEEP_FIRST = DuplicatePolicy.KEEP_FIRST
REPLACE = DuplicatePolicy.REPLACE
STORED, REPLACED, DUPLICATE = StoreOutcome.STORED, StoreOutcome.REPLACED, StoreOutcome.DUPLICATE


async def drain(index: Index) -> list[StoredEvent]:
    return [StoredEvent.from_json(m.payload) for m in await index.fetch_outbox(100_000)]


async def test_ping(index: Index) -> None:
    await index.ping()


async def test_empty_batch_changes_nothing(index: Index) -> None:
    assert await index.store_instances([]) == []
    assert await index.fetch_outbox(10) == []


async def test_store_then_get_returns_the_same_record(index: Index) -> None:
    w = write(sop_uid(1), **FULL_INSTANCE)

    assert await index.store_instances([w]) == [STORED]

    assert await index.get_instance("t1", sop_uid(1)) == w.extracted.instance


async def test_absent_optional_values_stay_absent(index: Index) -> None:
    w = write(sop_uid(1))
    await index.store_instances([w])

    got = await index.get_instance("t1", sop_uid(1))

    assert got == w.extracted.instance
    assert got is not None and got.rows is None and got.window_center is None


async def test_unknown_instance_is_none(index: Index) -> None:
    await index.store_instances([write(sop_uid(1))])

    assert await index.get_instance("t1", sop_uid(2)) is None
    assert await index.get_instance("t2", sop_uid(1)) is None


async def test_batch_of_100_in_one_call(index: Index) -> None:
    writes = [write(sop_uid(n), series=f"{SERIES}{n % 3}", instance_number=n) for n in range(100)]

    outcomes = await index.store_instances(writes)

    assert outcomes == [STORED] * 100
    assert await index.count_instances("t1") == 100
    events = await drain(index)
    assert [e.sop_instance_uid for e in events] == [sop_uid(n) for n in range(100)]
    for w in writes[::17]:
        assert await index.get_instance("t1", w.extracted.instance.sop_instance_uid) == (
            w.extracted.instance
        )


async def test_keep_first_keeps_the_original(index: Index) -> None:
    first = write(sop_uid(1), rows=256, rescale_type="HU")
    second = write(sop_uid(1), rows=1024, rescale_type="US", size=99)
    await index.store_instances([first])

    assert await index.store_instances([second]) == [DUPLICATE]

    assert await index.get_instance("t1", sop_uid(1)) == first.extracted.instance
    events = await drain(index)
    assert [e.event_id for e in events] == [first.event.event_id]


async def test_replace_takes_the_new_attributes(index: Index) -> None:
    first = write(sop_uid(1), rows=256)
    second = write(sop_uid(1), rows=1024, size=99, policy=REPLACE)
    await index.store_instances([first])

    assert await index.store_instances([second]) == [REPLACED]

    assert await index.get_instance("t1", sop_uid(1)) == second.extracted.instance
    events = await drain(index)
    assert [e.event_id for e in events] == [first.event.event_id, second.event.event_id]
    assert [e.replaced for e in events] == [False, True]
    assert await index.count_instances("t1") == 1


async def test_replace_of_a_new_instance_is_a_plain_store(index: Index) -> None:
    assert await index.store_instances([write(sop_uid(1), policy=REPLACE)]) == [STORED]
    assert [e.replaced for e in await drain(index)] == [False]


async def test_same_sop_twice_in_one_batch_behaves_sequentially(index: Index) -> None:
    a1 = write(sop_uid(1), rows=1)
    a2 = write(sop_uid(1), rows=2)
    b1 = write(sop_uid(2), rows=1)
    b2 = write(sop_uid(2), rows=2, policy=REPLACE)
    c1 = write(sop_uid(3), rows=1, policy=REPLACE)
    c2 = write(sop_uid(3), rows=2, policy=REPLACE)
    c3 = write(sop_uid(3), rows=3)

    outcomes = await index.store_instances([a1, b1, a2, b2, c1, c2, c3])

    assert outcomes == [STORED, STORED, DUPLICATE, REPLACED, STORED, REPLACED, DUPLICATE]
    assert await index.get_instance("t1", sop_uid(1)) == a1.extracted.instance
    assert await index.get_instance("t1", sop_uid(2)) == b2.extracted.instance
    assert await index.get_instance("t1", sop_uid(3)) == c2.extracted.instance
    events = await drain(index)
    expected = [a1, b1, b2, c1, c2]
    assert [e.event_id for e in events] == [w.event.event_id for w in expected]
    assert await index.count_instances("t1") == 3


async def test_series_under_another_study_conflicts_and_commits_nothing(index: Index) -> None:
    await index.store_instances([write(sop_uid(1), study=STUDY, series=SERIES)])
    before = await index.fetch_outbox(100)
    other_study = STUDY + ".2"
    innocent = write("1.2.3.4.5", study=other_study, series="1.2.3.4")
    duplicate_replaced = write(sop_uid(1), rows=7, policy=REPLACE)
    culprit = write(sop_uid(2), study=other_study, series=SERIES)

    with pytest.raises(IdentityConflict) as caught:
        await index.store_instances([innocent, duplicate_replaced, culprit])

    assert SERIES in caught.value.reason
    assert STUDY in caught.value.reason and other_study in caught.value.reason
    assert await index.get_instance("t1", "1.2.3.4.5") is None
    assert await index.get_instance("t1", sop_uid(2)) is None
    assert (await index.get_instance("t1", sop_uid(1))) == write(sop_uid(1)).extracted.instance
    assert await index.count_instances("t1") == 1
    assert await index.fetch_outbox(100) == before
    # the others, retried one by one, still go in
    assert await index.store_instances([innocent]) == [STORED]


async def test_series_under_two_studies_within_one_batch_conflicts(index: Index) -> None:
    first = write(sop_uid(1), study=STUDY, series=SERIES)
    second = write(sop_uid(2), study=STUDY + ".9", series=SERIES)

    with pytest.raises(IdentityConflict):
        await index.store_instances([first, second])

    assert await index.count_instances("t1") == 0
    assert await index.fetch_outbox(10) == []


async def test_keep_first_duplicate_does_not_trigger_a_conflict(index: Index) -> None:
    await index.store_instances([write(sop_uid(1))])
    # same SOP instance, sent again with other parents: kept as it was, nothing checked
    again = write(sop_uid(1), study=STUDY + ".7", series=SERIES)

    assert await index.store_instances([again]) == [DUPLICATE]


async def test_outbox_is_oldest_first_and_published_rows_go(index: Index) -> None:
    writes = [write(sop_uid(n)) for n in range(5)]
    await index.store_instances(writes[:2])
    await index.store_instances(writes[2:3])
    await index.store_instances(writes[3:])

    everything = await index.fetch_outbox(10)
    first_two = await index.fetch_outbox(2)

    assert [m.id for m in everything] == sorted(m.id for m in everything)
    assert len({m.id for m in everything}) == 5
    assert first_two == everything[:2]
    assert all(m.topic == "instance.stored" for m in everything)
    assert all(m.key == f"t1/{STUDY}" for m in everything)
    assert [m.payload for m in everything] == [w.event.to_json() for w in writes]

    await index.mark_published([m.id for m in first_two])
    assert await index.fetch_outbox(10) == everything[2:]

    await index.mark_published([m.id for m in everything])  # twice is harmless
    assert await index.fetch_outbox(10) == []
    await index.store_instances([write(sop_uid(9))])
    later = await index.fetch_outbox(10)
    assert len(later) == 1 and later[0].id > everything[-1].id


async def test_tenants_are_independent(index: Index) -> None:
    a = write(sop_uid(1), tenant="alpha", rows=1)
    # beta may hang the same series under another study: UIDs are per tenant
    b = write(sop_uid(1), tenant="beta", rows=2, study=STUDY + ".5")
    b_other_study = write(sop_uid(2), tenant="beta", study=STUDY + ".5")

    assert await index.store_instances([a]) == [STORED]
    assert await index.store_instances([b, b_other_study]) == [STORED, STORED]

    assert await index.get_instance("alpha", sop_uid(1)) == a.extracted.instance
    assert await index.get_instance("beta", sop_uid(1)) == b.extracted.instance
    assert await index.count_instances("alpha") == 1
    assert await index.count_instances("beta") == 2
    assert await index.count_instances("gamma") == 0
    assert await index.list_instances("alpha", STUDY) == [a.extracted.instance]
    events = await drain(index)
    assert [e.tenant_id for e in events] == ["alpha", "beta", "beta"]


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("山田^太郎=やまだ^たろう", id="japanese"),
        pytest.param("张伟^医生", id="chinese"),
        pytest.param("홍^길동", id="korean"),
        pytest.param("Zoë^Ñúñez-Øster", id="latin"),
        pytest.param("🩻 CT 🫁", id="emoji"),
        pytest.param("肺" * 64, id="cjk-at-lo-limit"),
        pytest.param("🦴" * 64, id="emoji-at-lo-limit"),
    ],
)
async def test_non_ascii_values_round_trip(index: Index, text: str) -> None:
    w = write(
        sop_uid(1),
        rescale_type=text,
        blob_key=f"t1/{text}/x.dcm",
        patient={"patient_name": text[:64]},
        study_attrs={"study_description": text, "accession_number": text[:16]},
        series_attrs={"series_description": text},
        patient_id=text[:16],
    )

    assert await index.store_instances([w]) == [STORED]

    got = await index.get_instance("t1", sop_uid(1))
    assert got is not None
    assert got.rescale_type == text
    assert got.blob_key == f"t1/{text}/x.dcm"
    [message] = await index.fetch_outbox(1)
    assert message.payload == w.event.to_json()
    assert StoredEvent.from_json(message.payload).accession_number == text[:16]


async def test_ascii_case_is_significant(index: Index) -> None:
    lower = write(sop_uid(1), tenant="t1", rescale_type="hu")
    upper_tenant = write(sop_uid(1), tenant="T1", rescale_type="HU")

    assert await index.store_instances([lower, upper_tenant]) == [STORED, STORED]

    assert (await index.get_instance("t1", sop_uid(1))) == lower.extracted.instance
    assert (await index.get_instance("T1", sop_uid(1))) == upper_tenant.extracted.instance


async def test_list_instances_by_study_and_series(index: Index) -> None:
    s1, s2 = SERIES + "1", SERIES + "2"
    writes = [
        write(sop_uid(5, s2), series=s2, instance_number=2),
        write(sop_uid(1, s1), series=s1, instance_number=10),
        write(sop_uid(3, s1), series=s1),
        write(sop_uid(2, s1), series=s1, instance_number=9),
        write(sop_uid(4, s2), series=s2, instance_number=1),
        write("1.9.9", study="1.9", series="1.9.1"),
    ]
    await index.store_instances(writes)

    in_study = await index.list_instances("t1", STUDY)
    in_series = await index.list_instances("t1", STUDY, s2)

    assert [r.sop_instance_uid for r in in_study] == [
        sop_uid(2, s1),
        sop_uid(1, s1),
        sop_uid(3, s1),
        sop_uid(4, s2),
        sop_uid(5, s2),
    ]
    assert [r.sop_instance_uid for r in in_series] == [sop_uid(4, s2), sop_uid(5, s2)]
    assert await index.list_instances("t1", "1.2.404") == []
    assert await index.list_instances("t2", STUDY) == []


async def test_concurrent_batches_all_land(index: Index) -> None:
    tasks, batches, size = 8, 4, 10

    async def client(task: int) -> list[StoreOutcome]:
        outcomes: list[StoreOutcome] = []
        for batch in range(batches):
            writes = [
                # every task writes into the same study and the same two series
                write(sop_uid(task * 1000 + batch * 100 + n, SERIES + str(n % 2)), series=SERIES
                      + str(n % 2), study_attrs={"study_description": f"task {task}"})
                for n in range(size)
            ]  # fmt: skip
            outcomes += await index.store_instances(writes)
        return outcomes

    results = await asyncio.gather(*(client(t) for t in range(tasks)))

    total = tasks * batches * size
    assert [o for r in results for o in r] == [STORED] * total
    assert await index.count_instances("t1") == total
    assert len(await index.list_instances("t1", STUDY)) == total
    assert len(await index.fetch_outbox(10 * total)) == total


async def test_concurrent_stores_of_one_sop_store_it_once(index: Index) -> None:
    async def client(task: int) -> list[StoreOutcome]:
        batch: list[InstanceWrite] = [write(sop_uid(1), rows=task), write(sop_uid(100 + task))]
        return await index.store_instances(batch)

    results = await asyncio.gather(*(client(t) for t in range(6)))

    shared = [r[0] for r in results]
    assert sorted(shared) == sorted([STORED] + [DUPLICATE] * 5)
    assert all(r[1] == STORED for r in results)
    winner = shared.index(STORED)
    got = await index.get_instance("t1", sop_uid(1))
    assert got is not None and got.rows == winner
    assert await index.count_instances("t1") == 7
    assert len(await index.fetch_outbox(100)) == 7


async def test_count_levels_counts_each_tenants_studies_series_and_instances(
    index: Index,
) -> None:
    other_study, other_series = f"{STUDY}.9", f"{SERIES}.9"
    await index.store_instances(
        [
            write(sop_uid(1)),
            write(sop_uid(2)),
            write(sop_uid(3), series=f"{SERIES}.2"),
            write(sop_uid(4), study=other_study, series=other_series),
            write(sop_uid(5), tenant="t2"),
        ]
    )

    assert await index.count_levels("t1") == LevelCounts(studies=2, series=3, instances=4)
    assert await index.count_levels("t2") == LevelCounts(studies=1, series=1, instances=1)
    assert await index.count_levels("t3") == LevelCounts(studies=0, series=0, instances=0)
