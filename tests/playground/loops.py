"""For tests that serve the gateway in-process on an event loop of their own (asyncio.run)."""

import asyncio

from playground.services import gateway as gateway_services


async def finish_like_a_server() -> None:
    """Await at the end of the test's loop. A server's loop keeps running after the response:
    work the answer left behind (a shielded settlement) finishes first, as it would there. Then
    the upstream clients kept for this loop are closed, since unlike a server's it ends here."""
    others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    await asyncio.gather(*others)
    await gateway_services._close_adapter_transports()
