"""Platform registry (mechanism): the set of tenant ids a platform pool serves for its
``tenant = "*"`` subscriptions. It lives outside every tenant's keys (``keys.platform_tenants``)
and is written at provisioning by the platform (``eventbus tenants add``), never by a
tenant's credentials, so discovery needs neither ``KEYS``/``SCAN`` nor any access of one
tenant to another's data: a pool reads one small set once a second.
"""

from __future__ import annotations

from eventbus.keys import platform_tenants, platform_tenants_version, validate_tenant_id
from eventbus.redis_io import AnyRedis, s, translated


class TenantRegistry:
    """The platform's tenant ids (a Redis set)."""

    def __init__(self, client: AnyRedis) -> None:
        self._r = client
        self.key = platform_tenants()
        self.version_key = platform_tenants_version()

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

    def version(self) -> int:
        """The registry's change counter (0: never changed)."""
        with translated("read the tenant registry's version"):
            return int(self._r.get(self.version_key) or 0)

    def add(self, *tenant_ids: str) -> int:
        """Register tenants (idempotent); returns how many were new."""
        return self._change("sadd", tenant_ids)

    def remove(self, *tenant_ids: str) -> int:
        """Unregister tenants (their data stays); returns how many were registered."""
        return self._change("srem", tenant_ids)

    def _change(self, command: str, tenant_ids: tuple[str, ...]) -> int:
        ids = [validate_tenant_id(t) for t in tenant_ids]
        with translated(f"change the tenant registry ({command})"):
            pipe = self._r.pipeline(transaction=True)  # the set and its counter together
            (pipe.sadd if command == "sadd" else pipe.srem)(self.key, *ids)
            pipe.incr(self.version_key)
            changed, _ = pipe.execute()
        return int(changed)

    def ping(self) -> None:
        """Raise the bus's error if Redis cannot be reached now."""
        with translated("ping"):
            self._r.ping()
