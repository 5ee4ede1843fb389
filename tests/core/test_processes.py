"""A process's state and start time as the kernel gives them (harness.core.processes)."""
import subprocess
import sys
import time

from harness.core import processes


def test_the_state_and_start_of_a_process_whose_name_holds_parentheses_and_spaces(tmp_path):
    odd = tmp_path / "a) b (c"  # /proc/<pid>/stat puts the name in parentheses: split after the last one
    odd.symlink_to(sys.executable)
    child = subprocess.Popen([str(odd), "-c", "import time; print(flush=True); time.sleep(30)"], stdout=subprocess.PIPE)
    try:
        child.stdout.readline()  # started; it may still run (R) or wait on the disk (D, a loaded CI machine) a moment
        deadline = time.time() + 10
        while (found := processes.stat(child.pid)) is None or found[0] in "RD":
            assert time.time() < deadline
            time.sleep(0.05)
        state, started = found
        own = processes.stat()
        assert state == "S" and own is not None and own[0] == "R"  # this one runs while it reads its own
        assert started >= own[1]  # the child started after this process
        assert 0 <= processes.age_s(child.pid) <= processes.age_s()
    finally:
        child.kill()
        child.wait()
    assert processes.stat(child.pid) is None and processes.age_s(child.pid) is None  # reaped: no such process
