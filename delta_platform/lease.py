"""Holding a table's lease for a whole load: one writer per table (DESIGN §3)."""

from __future__ import annotations

import time
from datetime import timedelta

from delta_platform.store import ControlStore, Lease


class LeaseKeeper:
    """Holds the lease and renews it during long reads, so a slow load is not taken over."""

    def __init__(self, store: ControlStore, lease: Lease, ttl: timedelta):
        self.store, self.lease, self.ttl = store, lease, ttl

    def renew_if_due(self, force: bool = False) -> None:
        remaining = self.lease.expires_at - time.time()
        if force or remaining < self.ttl.total_seconds() / 2:
            self.lease = self.store.renew_lease(self.lease, self.ttl.total_seconds())
