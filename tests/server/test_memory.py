"""The malloc setting for large messages applies where glibc is, and can be turned off."""

import os
import subprocess
import sys

CODE = "from wmsim.rpc.memory import keep_freed_memory; print(keep_freed_memory())"


def run(env_value=None):
    env = {k: v for k, v in os.environ.items() if k != "WMSIM_KEEP_FREED_MEMORY"}
    if env_value is not None:
        env["WMSIM_KEEP_FREED_MEMORY"] = env_value
    result = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True,
                            env=env, check=True)  # fmt: skip
    return result.stdout.strip()


def test_it_applies_on_glibc_and_opting_out_leaves_malloc_alone():
    import platform

    expected = "True" if platform.libc_ver()[0] == "glibc" else "False"
    assert run() == expected
    assert run("0") == "False"
