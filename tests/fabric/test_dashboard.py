"""The dashboard in a real browser (Debian's Chromium, driven by Playwright) during a real
`fedfabric run --serve` on Fabric: the round counter and the accuracy chart advance as rounds
commit, and the update Health's own server refused appears with its organisation and reason.
The screenshot stays in ``test-artifacts/dashboard-run.png``."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

from fedfabric.fl_worker.config import RunConfig
from fedfabric.fl_worker.run import RunOptions, run_job
from fedfabric.network import FabricNetwork
from tests.conftest import ROOT
from tests.service.browser import open_browser, open_page

ROUNDS = 6
TASK = "dashboard"
URL = re.compile(r"TransportMSP's service: (https://\S+/#token=\S+)")
ARTIFACT = ROOT / "test-artifacts" / "dashboard-run.png"


async def test_the_dashboard_follows_a_running_task(network: FabricNetwork, tmp_path) -> None:
    said: list[str] = []
    done, stop = asyncio.Event(), asyncio.Event()

    async def hold(_: Any) -> None:
        done.set()
        await stop.wait()

    config = RunConfig(rounds=ROUNDS, workers_per_org=1, epochs=1, malicious_org=3)
    options = RunOptions(task=TASK, baseline=False, serve=0, served=hold, report_dir=tmp_path)
    async with open_browser() as browser, open_page(browser) as page:
        job = asyncio.ensure_future(run_job(config, options, network, say=said.append))
        try:
            while not (found := next((m for m in map(URL.search, said) if m), None)):
                assert not job.done(), f"the job ended without a service: {said} {job}"
                await asyncio.sleep(0.05)
            await page.goto(f"{found[1].replace('/#', f'/?task={TASK}#')}")
            counters, points = [], []
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                counters.append((await page.text_content("#round-counter") or "").strip())
                points.append(await page.locator(
                    '#accuracy-chart circle.point[data-series="accuracy"]').count())  # fmt: skip
                if done.is_set() and points[-1] == ROUNDS:
                    break
                await asyncio.sleep(0.1)
            refused = await page.locator("#refused-list").inner_text()
            ARTIFACT.parent.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTIFACT), full_page=True)
        finally:
            stop.set()
            await asyncio.wait_for(job, 120)

    shown = list(dict.fromkeys(c for c in counters if c.startswith("Round")))
    assert len(shown) >= 3 and shown[-1] == f"Round {ROUNDS} / {ROUNDS}", shown
    grew = list(dict.fromkeys(points))
    assert grew[-1] == ROUNDS and len(grew) >= 3, grew  # the chart grew while it ran
    assert "HealthMSP" in refused and "private-validation" in refused, refused
    assert ARTIFACT.stat().st_size > 10_000
