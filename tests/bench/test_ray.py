"""Ray executor against a real Ray head started here on the loopback interface (2 CPUs): the
results it stores are identical, run for run, to the local executor's (every column but time
and memory, compared exactly); the driver writes them (the workers return them)."""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

from bench.cli import main
from bench.store import Store
from test_determinism import SUITE, traces

pytest.importorskip("ray", reason="ray is not installed: pip install -e '.[ray]'")
# a loopback test cluster: no token authentication (else ~/.ray/auth_token, if any, decides)
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head():
    """`ray start --head --block` on 127.0.0.1 with 2 CPUs; stopped (this process only) after."""
    port, tmp = free_port(), Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    log = tmp / "start.log"
    cmd = [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block",
           "--port", str(port), "--node-ip-address", "127.0.0.1", "--num-cpus", "2",
           "--include-dashboard", "false", "--disable-usage-stats", "--temp-dir", str(tmp),
           "--object-store-memory", str(100 * 2 ** 20)]
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=ENV)
    try:
        deadline = time.monotonic() + 300                # a guard against hanging
        while "Ray runtime started" not in log.read_text():
            assert proc.poll() is None, f"ray start failed:\n{log.read_text()}"
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()                                 # --block: stops the processes it started
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def test_ray_results_identical_to_local_executor(ray_head, tmp_path, write_suite):
    suite = write_suite(SUITE)
    on_ray, local = tmp_path / "ray", tmp_path / "local"
    done = subprocess.run([sys.executable, "-m", "bench", "run", "--suite", suite, "--results-dir",
                           str(on_ray), "--executor", "ray", "--address", ray_head, "--quiet"],
                          capture_output=True, text=True, timeout=600, env=ENV, check=False)
    assert done.returncode == 0, done.stderr
    assert "4 finished" in done.stderr
    assert main(["run", "--suite", suite, "--results-dir", str(local), "--quiet", "--jobs", "2"]) == 0
    got, ref = traces(on_ray), traces(local)
    assert ref["run_id"].nunique() == 4
    pd.testing.assert_frame_equal(got, ref, check_exact=True)
    st = Store(on_ray)
    for rid in st.run_ids():                # written by the driver through the one store
        assert st.corruption(rid) == "" and st.read_meta(rid)["status"] == "finished"


@pytest.mark.parametrize("address, needle", [("nohost", "is not HOST:PORT"),
                                             ("127.0.0.1:1", "no Ray head reachable there")])
def test_bad_address_is_input_error(tmp_path, capsys, write_suite, address, needle):
    res = tmp_path / "res"
    code = main(["run", "--suite", write_suite(SUITE), "--executor", "ray", "--address", address,
                 "--results-dir", str(res)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and needle in err and "\n" not in err, err
    assert not res.exists()
