"""The clock-set watch (cpe_tunnel/adapters/clock.py) against a real clock step, inside
User-Mode Linux: the VM has its own CLOCK_REALTIME, so stepping it here does not touch
the host's (shared) clock. Run by tests/unit/test_kernel_path.py through
tests/kernel/runner.py; skipped anywhere else.

1. A timerfd armed with TFD_TIMER_CANCEL_ON_SET really becomes readable (read fails
   with ECANCELED) when the clock is stepped, both ways.
2. The daemon whose TIC login failed on the clock asks TIC again at once when the
   clock is stepped (no hotplug, no CLI: the timerfd alone), not at the 60 s retry."""

import os
import time

import pytest

from tests.kernel.runner import IN_VM_ENV

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(os.environ.get(IN_VM_ENV) != "uml",
                       reason="runs inside User-Mode Linux (tests/unit/test_kernel_path.py boots it)"),
]


def step_clock(seconds):
    time.clock_settime(time.CLOCK_REALTIME, time.time() + seconds)


def test_timerfd_sees_real_clock_steps():
    from cpe_tunnel.adapters.clock import ClockWatch
    from cpe_tunnel.loop import Loop

    loop = Loop()
    calls = []
    w = ClockWatch(loop, lambda: calls.append(time.time()))
    assert w.start()
    stepped = 0
    try:
        loop.run_once(max_wait=0.2)
        assert calls == []  # nothing while nobody sets the clock
        step_clock(3600)
        stepped += 3600
        loop.run_once(max_wait=5)
        assert len(calls) == 1 and w.notices == 1
        step_clock(-3600)
        stepped -= 3600
        loop.run_once(max_wait=5)
        assert len(calls) == 2 and w.active  # re-armed after each notice
    finally:
        if stepped:
            step_clock(-stepped)
        w.stop()
        loop.close()


def test_tic_is_retried_at_once_when_the_clock_is_stepped(umllab):
    from tests.kernel.test_inside_daemon import tic_daemon
    from tests.sixxs_pop import example_config, start_pop

    lab = umllab
    pop = start_pop(lab, example_config())
    pop.set_clock_offset(600)  # real time is 10 minutes ahead of this router's clock
    d = tic_daemon(lab, pop).start()
    stepped = False
    try:
        st = d.wait_status(lambda s: s["state"] == "down" and "clock" in (s["reason"] or ""), timeout=30,
                           what="the clock error")
        assert st["sixxs"]["waiting_for_clock"] and st["sixxs"]["clock_watch"] == "timerfd", st["sixxs"]
        sessions = pop.state()["tic"]["sessions"]
        # NTP steps the router's clock forward to the real time. The PoP reads the same
        # (VM) clock, so its offset goes to 0 at the same moment.
        pop.set_clock_offset(0)
        step_clock(600)
        stepped = True
        st = d.wait_status(lambda s: s["state"] == "up", timeout=20, what="the tunnel after the clock step")
        assert st["sixxs"]["config_from"] == "TIC" and not st["sixxs"]["waiting_for_clock"]
        assert pop.state()["tic"]["sessions"] == sessions + 1
        assert "the clock was set" in d.log()
    finally:
        if stepped:
            step_clock(-600)
        d.stop()
        d.cleanup()
