import asyncio, collections, time
from pathlib import Path
from flattrfed.clock import ManualClock
from flattrfed.worker.loop import Worker
from tests.harness.databases import DatabaseFactory
from tests.harness import faults as F
from tests.integration import test_simulation as sim

async def test_probe(clock: ManualClock, database_factory: DatabaseFactory, tmp_path: Path, monkeypatch) -> None:
    spent = collections.Counter(); n = collections.Counter(); slow = []
    orig_run_job = Worker.run_job
    async def run_job(self, job):
        t = time.time(); await orig_run_job(self, job); d = time.time() - t
        spent[job.kind] += d; n[job.kind] += 1
        if d > 1: slow.append((job.kind, round(d,2), str(job.payload)[:200]))
    monkeypatch.setattr(Worker, "run_job", run_job)
    orig_sever = F.Faults.sever_connections
    async def sever(self):
        t = time.time(); await orig_sever(self); spent["sever"] += time.time() - t
    monkeypatch.setattr(F.Faults, "sever_connections", sever)
    world = await sim.start_world(11, clock, database_factory, tmp_path)
    t0=time.time()
    try:
        await sim.fault_phase(world); print("fault", time.time()-t0)
    finally:
        await world.federation.close()
    print(spent, n)
    for s in slow[:20]: print(s)
