"""A job kind on a queue of its own, for the scale-out system test (tests/system/cluster.py): only
the cluster's processes load it (RUNBOARD_KIND_MODULES), so the suite's own processes and the
test process keep every kind on `default`. Never imported by a test module."""

from jobs.kinds.registry import JobKind, register
from tests.jobs.kinds_for_tests import BlockParams, block

register(
    JobKind(
        name="scale_block",
        title="Scale: block",
        description="test_block on the `scale` queue, which only the cluster's second worker consumes.",
        params_model=BlockParams,
        run=block,
        soft_time_limit=60,
        time_limit=90,
        queue="scale",
    )
)
