import multiprocessing
import os

from dashboard.process_local import ProcessLocal


def _child_sees(local, queue):
    queue.put((local.peek(), local.get()))


def test_a_forked_child_makes_its_own_value_and_the_parent_keeps_its_own():
    local = ProcessLocal(os.getpid)
    parent_value = local.get()
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_sees, args=(local, queue))
    child.start()
    peeked, made = queue.get(timeout=10)
    child.join(10)

    assert peeked is None  # the inherited value is not the child's
    assert made == child.pid != parent_value
    assert local.get() == parent_value == os.getpid()
