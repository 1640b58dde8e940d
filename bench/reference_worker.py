"""Worker process for the reference design (bench/reference_design.py), used by crash_reissue.py."""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker

from reference_design import OneActivityAgentWorkflow, run_whole_loop


async def main() -> None:
    client = await Client.connect(os.environ["KRON_TEMPORAL_ADDRESS"],
                                  data_converter=pydantic_data_converter)
    worker = Worker(client, task_queue=os.environ["KRON_TASK_QUEUE"],
                    workflows=[OneActivityAgentWorkflow], activities=[run_whole_loop],
                    sticky_queue_schedule_to_start_timeout=timedelta(seconds=2))
    async with worker:
        print("reference-worker ready", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
