"""Platform registry (mechanism): the set of tenant ids a platform pool serves for its
``tenant = "*"`` subscriptions. It lives outside every tenant's keys (``keys.platform_tenants``)
and is written at provisioning by the platform (``eventbus tenants add``), never by a
tenant's credentials, so discovery needs neither ``KEYS``/``SCAN`` nor any access of one
tenant to another's data: a pool reads one small set once a second.
"""

from __future__ import annotations

import redis

from eventbus.keys import platform_tenants, validate_tenant_id
from eventbus.redis_io import s, translated


class TenantRegistry:
    """The platform's tenant ids (a Redis set)."""

    def __init__(self, client: redis.Redis) -> None:
        self._r = client
        self.key = platform_tenants()

    def tenants(self) -> list[str]:
        """Every registered tenant id, sorted (ids that are not valid names are skipped)."""
        with translated("read the tenant registry"):
            raw = self._r.smembers(self.key)
        out = []
        for member in raw:
            name = s(member)
            try:
                out.append(validate_tenant_id(name))
            except ValueError:
                continue
        return sorted(out)

    def add(self, *tenant_ids: str) -> int:
        """Register tenants (idempotent); returns how many were new."""
        ids = [validate_tenant_id(t) for t in tenant_ids]
        with translated("register tenants"):
            return int(self._r.sadd(self.key, *ids))

    def remove(self, *tenant_ids: str) -> int:
        """Unregister tenants (their data stays); returns how many were registered."""
        ids = [validate_tenant_id(t) for t in tenant_ids]
        with translated("unregister tenants"):
            return int(self._r.srem(self.key, *ids))

    def ping(self) -> None:
        """Raise the bus's error if Redis cannot be reached now."""
        with translated("ping"):
            self._r.ping()
