"""What the port-mapping tests share: a mapper run until its first mapping, renewed once and
closed, against whichever router stand-in the test started."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from polykey.network.gateway import Mapping
from polykey.network.portmap import PortMapper


@dataclass
class Renewed:
    mapper: PortMapper
    changes: list[Mapping | None]  # what the mapper told, in order
    renewed: Mapping  # its answer to one more map_once (a renewal)
    status: dict[str, Any]  # its status before it was closed


def map_renew_close(make: Callable[[], PortMapper]) -> Renewed:
    """Run ``make()``'s mapper until it tells its first mapping, map once more, and close it
    (which deletes the mapping)."""

    async def scenario() -> Renewed:
        mapper = make()
        changes: list[Mapping | None] = []

        async def changed(mapping: Mapping | None) -> None:
            changes.append(mapping)

        task = asyncio.create_task(mapper.run(changed))
        while not changes:
            await asyncio.sleep(0.01)
        renewed = await mapper.map_once()
        status = mapper.status()
        task.cancel()
        await mapper.close()
        return Renewed(mapper, changes, renewed, status)

    return asyncio.run(scenario())
