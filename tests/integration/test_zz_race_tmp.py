from __future__ import annotations
import asyncio
from tests.integration.test_delivery import *  # noqa

async def test_race(federation: Federation, make_sink: SinkFactory) -> None:
    alpha, _ = await start_blog(federation)
    sink = await make_sink()
    await follow_blog(alpha, sink, sink.add_actor("ann"), sink.add_actor("dan", shared_inbox=False))
    sink.answer_always(410)
    item = await post(alpha, "race")
    a = delivery_worker(alpha, alpha.services.client, batch_size=1, worker_id="a")
    b = delivery_worker(alpha, alpha.services.client, batch_size=1, worker_id="b")
    ja = await a.claim(); jb = await b.claim()
    await asyncio.gather(a.run_job(ja[0]), b.run_job(jb[0]))
    rows = await delivery_rows(alpha)
    print([(r.state, r.last_error) for r in rows])
    assert all(r.state == "failed" for r in rows if activity_of(r) == create_id(item))
