"""Ctrl-C is acknowledged at once: one line when the signal arrives, while the main thread is
still waiting for a step (Python would run its own handler only after the step returns)."""
import os
import select
import signal
import threading

import jax
import jax.numpy as jnp
import numpy as np

from srupp_jax.training.workdir import StopSignals


def test_the_line_comes_while_the_main_thread_waits_for_a_step():
    release, seen = threading.Event(), []
    read, write = os.pipe()

    def wait_for_release(x):           # a step that lasts until the test releases it
        release.wait(timeout=120)
        return x

    @jax.jit
    def long_step(x):
        return jax.pure_callback(wait_for_release, jax.ShapeDtypeStruct(x.shape, x.dtype), x)

    def press_ctrl_c():
        os.kill(os.getpid(), signal.SIGINT)
        ready, _, _ = select.select([read], [], [], 120)    # a guard against a hang only
        seen.append(os.read(read, 200).decode() if ready else "")
        release.set()                  # the step ends only after the line was written

    with StopSignals(stream_fd=write) as signals:
        helper = threading.Thread(target=press_ctrl_c)
        helper.start()
        out = jax.block_until_ready(long_step(jnp.arange(3.0)))
        helper.join()
        assert seen == ["Ctrl-C: stopping after the current step: saving\n"]
        assert signals.status == "interrupted"
    np.testing.assert_array_equal(out, [0.0, 1.0, 2.0])
    os.close(read), os.close(write)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
