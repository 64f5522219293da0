"""The HA deployment through a switchover, a failover, an orphaned primary and two rejoins.

A short form of ``make ha-soak`` (seconds between faults instead of tens):
``deploy/ha/cluster.py`` runs etcd, two Patroni nodes with a synchronous
standby, PgBouncer and two service replicas; bank clients call both replicas
while the primary moves. PostgreSQL only, by nature, and only where Debian's
patroni, etcd-server and pgbouncer are installed (``make ha``; CI installs
them): elsewhere it is skipped, saying which is missing.
"""

from __future__ import annotations

import pytest

from tests.ha_cluster import HaUnavailable, check_ha_available
from tests.ha_soak import FAULTS, report, run_soak

# Seconds of load before the first fault and after each one.
PHASE = 3.0


async def test_a_moving_primary_loses_no_acknowledged_write_and_replicas_recover_by_themselves():
    try:
        check_ha_available()
    except HaUnavailable as error:
        pytest.skip(f"needs the HA engines: {error}")
    outcome = await run_soak(PHASE, clients=4, replicas=2)
    report(outcome)  # shown by pytest when an assertion below fails

    assert [fault.name for fault in outcome.faults] == list(FAULTS)
    # Calls met the faults, and each ended OK or UNAVAILABLE with our details.
    codes = {call.code.name for call in outcome.calls}
    assert "UNAVAILABLE" in codes, codes
    assert outcome.bad == [], outcome.bad[:10]
    for fault in outcome.faults:
        assert fault.first_ok is not None, f"no OK call after {fault.name}"
    # Nothing acknowledged is missing, before and after the resends settle it.
    assert outcome.before.lost == [], outcome.before.lost[:10]
    assert outcome.after.lost == [], outcome.after.lost[:10]
    assert outcome.before.violations == [], outcome.before.violations[:10]
    assert outcome.after.violations == [], outcome.after.violations[:10]
    # The same replica processes served throughout, and logged no traceback.
    assert all(outcome.replicas_alive), outcome.replicas_alive
    assert outcome.tracebacks == [], outcome.tracebacks[:5]
