"""kopf's own watches ask the API server for only what wattcap needs.

A handler's `labels=` filter is applied by kopf after the event arrived, so
without a server-side selector every batch Job in the cluster would stream to
the operator just to wake it for the few it owns.
"""

from __future__ import annotations

import kopf
from kopf._cogs.structs.references import Resource

from wattcap import handlers
from wattcap.jobs import LABEL_TJ


def test_kopf_watches_only_owned_jobs() -> None:
    settings = kopf.OperatorSettings()
    handlers.configure(settings)
    jobs = Resource("batch", "v1", "jobs", kind="Job", singular="job", namespaced=True)
    assert list(settings.watching.label_selectors.collect(jobs)) == [LABEL_TJ]
