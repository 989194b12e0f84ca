import asyncio, collections, traceback
from pathlib import Path
from flattrfed.clock import ManualClock
from tests.harness.databases import DatabaseFactory
from tests.integration import test_simulation as sim

async def test_probe(clock: ManualClock, database_factory: DatabaseFactory, tmp_path: Path) -> None:
    main = asyncio.current_task()
    counts = collections.Counter()
    async def sampler():
        while True:
            await asyncio.sleep(0.5)
            frames = main.get_stack(limit=40)
            key = " <- ".join(f"{f.f_code.co_name}:{f.f_lineno}" for f in frames[-6:])
            counts[key] += 1
    t = asyncio.create_task(sampler())
    world = await sim.start_world(11, clock, database_factory, tmp_path)
    import time; t0=time.time()
    try:
        await sim.fault_phase(world); print("fault", time.time()-t0)
        await sim.close_phase(world); print("close", time.time()-t0)
    finally:
        t.cancel()
        await world.federation.close()
    for k, v in counts.most_common(15): print(v, k)
