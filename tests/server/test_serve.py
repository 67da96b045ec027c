"""wmsim serve against real clients on 127.0.0.1: equivalence, bad input, lifecycle, load."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import gymnasium
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from gymnasium.utils import seeding
from gymnasium.utils.env_checker import check_env
from helpers import FORMAT_1_BUNDLE
from serving import (
    free_envs,
    kill_a_stepping_client,
    play,
    self_signed,
    served,
    spec,
    wait_until,
)

import wmsim  # noqa: F401  registers the ids
from wmsim.rpc import tensors
from wmsim.rpc.v1 import dream_pb2 as pb
from wmsim.rpc.v1 import dream_pb2_grpc as pb_grpc

ID = "wmsim/Breakout-dream-v0"
MAX_ENVS = 64
NUM_CONTEXTS = 1024  # start contexts in the shipped bundle


@pytest.fixture(scope="module")
def server():
    with served(
        "--warm-starts",  # its dreams are compared with in-process ones, which observe lazily
        "--max-envs",
        MAX_ENVS,
        "--max-sessions",
        40,
        "--max-message-mb",
        1,
        "--idle-timeout-s",
        1,
        "--metrics-every-s",
        0.5,
        "--reflection",
    ) as running:
        yield running  # fmt: skip


def stub(address: str, metadata=()):
    channel = grpc.insecure_channel(address)
    return pb_grpc.DreamStub(channel), channel


@pytest.mark.parametrize("obs_type", ["pixels", "latent"])
def test_remote_dreams_what_in_process_dreams_for_the_same_seeds(server, obs_type):
    # every draw sampled, the strictest comparison (mode latents and likely ends: below);
    # 8 x 150 steps: the dream ends about 4 episodes per 1,000 random steps
    options = {"obs_type": obs_type, "latents": "sampled", "ends": "sampled"}
    remote = gymnasium.make_vec(ID, num_envs=8, server=server.address, **options)
    local = gymnasium.make_vec(ID, num_envs=8, threads=1, **options)
    ours, theirs = play(remote, 150, 5), play(local, 150, 5)
    ends = 0
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(a[0], b[0], rtol=1e-5, atol=1e-5)  # observations
        if len(a) == 5:
            np.testing.assert_allclose(a[1], b[1], rtol=1e-5, atol=1e-6)
            assert np.array_equal(a[2], b[2]) and np.array_equal(a[3], b[3])
            np.testing.assert_allclose(a[4]["continue"], b[4]["continue"], rtol=1e-5)
            ends += int(a[2].sum())
        assert np.array_equal(a[-1]["_context"], b[-1]["_context"]) if "context" in b[-1] else 1
    assert ends > 0  # the comparison went through episode ends and autoresets
    remote.close()
    local.close()


def test_likely_ends_are_the_same_remote_and_in_process(server):
    remote = gymnasium.make_vec(ID, num_envs=4, server=server.address, ends="likely")
    local = gymnasium.make_vec(ID, num_envs=4, threads=1, ends="likely")
    for a, b in zip(play(remote, 40, 3), play(local, 40, 3), strict=True):
        if len(a) == 5:
            assert np.array_equal(a[2], b[2])  # terminated
            stepped = a[4]["_continue"]  # sub-envs reset in this step took no step
            assert np.array_equal(a[2][stepped], a[4]["continue"][stepped] < 0.5)
    remote.close()
    local.close()


def test_mode_latents_are_the_same_remote_and_in_process(server):
    remote = gymnasium.make_vec(ID, num_envs=4, server=server.address, latents="mode")
    local = gymnasium.make_vec(ID, num_envs=4, threads=1, latents="mode")
    sampled = gymnasium.make_vec(ID, num_envs=4, threads=1, latents="sampled")
    ours, theirs, drawn = play(remote, 30, 3), play(local, 30, 3), play(sampled, 30, 3)
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(a[0], b[0], atol=1)  # frames: equal up to a rounding step
        if len(a) == 5:
            assert np.array_equal(a[2], b[2])  # terminated
    assert any(np.abs(a[0].astype(int) - c[0]).max() > 8 for a, c in zip(ours, drawn, strict=True))
    for envs in (remote, local, sampled):
        envs.close()


@pytest.mark.slow
def test_a_format_1_bundle_dreams_the_same_remote_and_in_process():
    """Gumbel-max noise, one uniform per class, the mode by 0.5: the same dreams on both sides."""
    with served("--model", FORMAT_1_BUNDLE) as running:
        for latents in ("sampled", "mode"):
            remote = gymnasium.make_vec(ID, num_envs=3, server=running.address, latents=latents)
            local = gymnasium.make_vec(ID, num_envs=3, model=FORMAT_1_BUNDLE, threads=1,
                                       latents=latents)  # fmt: skip
            for a, b in zip(play(remote, 20, 6), play(local, 20, 6), strict=True):
                np.testing.assert_array_equal(a[0], b[0])  # frames, uint8
                if len(a) == 5:
                    assert np.array_equal(a[2], b[2]) and np.array_equal(a[3], b[3])
            remote.close()
            local.close()


def test_a_remote_single_env_passes_gymnasiums_check_env_and_renders(server):
    env = gymnasium.make(ID, server=server.address, render_mode="rgb_array")
    check_env(env.unwrapped, skip_render_check=False)
    obs, _ = env.reset(seed=1)
    env.step(1)
    assert env.render().shape == (64, 64, 3)
    env.close()


def test_sb3_drives_remote_dreams(server):
    from wmsim_client.sb3 import SB3VecEnv

    venv = SB3VecEnv(num_envs=2, server=server.address, max_episode_steps=5)
    obs = venv.reset()
    assert obs.shape == (2, 64, 64, 3)
    ended = np.zeros(2, bool)
    for _ in range(5):  # the time limit ends each by the 5th step, if the model did not
        obs, rewards, dones, infos = venv.step(np.array([1, 3]))
        for i in np.flatnonzero(dones):
            assert infos[i]["terminal_observation"].shape == (64, 64, 3)
        ended |= dones
    assert ended.all()
    venv.close()


def test_health_and_reflection_answer(server):
    channel = grpc.insecure_channel(server.address)
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "wmsim.rpc.v1.Dream"):
        answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
        ProtoReflectionDescriptorDatabase,
    )

    services = ProtoReflectionDescriptorDatabase(channel).get_services()
    assert "wmsim.rpc.v1.Dream" in services and "grpc.health.v1.Health" in services
    channel.close()


def run_call(dream, session_id, requests):
    return dream.Run(iter(requests), metadata=(("wmsim-session", session_id),), timeout=10)


def bad_stream(address, requests, num_envs=2):
    """Open a session, send ``requests`` on a stream; the RpcError it ends with."""
    dream, channel = stub(address)
    with channel:
        session = dream.OpenSession(pb.OpenSessionRequest(num_envs=num_envs), timeout=5)
        with pytest.raises(grpc.RpcError) as caught:
            list(run_call(dream, session.session_id, requests))
    wait_until(lambda: free_envs(address) == MAX_ENVS)  # the session ended with its stream
    return caught.value


RESET_BOTH = pb.StepRequest(resets=[pb.Reset(env=0, seed=1), pb.Reset(env=1)])


def steps(actions, envs=(0, 1)):
    return pb.StepRequest(step_envs=list(envs), actions=tensors.encode(np.asarray(actions)))


@pytest.mark.parametrize(
    ("requests", "code", "message"),
    [
        ([RESET_BOTH, steps([0, 4])], "INVALID_ARGUMENT", r"actions must be in \[0, 4\)"),
        ([RESET_BOTH, steps([0, -1])], "INVALID_ARGUMENT", r"actions must be in \[0, 4\)"),
        ([RESET_BOTH, steps([0, 1, 2])], "INVALID_ARGUMENT", r"shape \(2,\)"),
        ([RESET_BOTH, steps(np.array([0.0, 1.0]))], "INVALID_ARGUMENT", "integer tensor"),
        ([RESET_BOTH, pb.StepRequest(step_envs=[0], actions=pb.Tensor(
            dtype="int64", shape=[1], data=b"\0"))], "INVALID_ARGUMENT", "needs 8 bytes"),
        ([RESET_BOTH, steps([0], envs=[2])], "INVALID_ARGUMENT", r"env indices in \[0, 2\)"),
        ([RESET_BOTH, steps([0, 0], envs=[1, 1])], "INVALID_ARGUMENT", "must not repeat"),
        ([pb.StepRequest(frame_envs=[0] * 10_000)], "INVALID_ARGUMENT",
         r"frame_envs must not repeat an env, got \[0, 0, 0, 0, 0, 0, 0, 0, ...\] \(10000 in"),
        ([RESET_BOTH, steps(np.zeros(2_000, int), envs=range(5, 2_005))], "INVALID_ARGUMENT",
         r"step_envs must be env indices in \[0, 2\), got \[5, 6, .*\(2000 in all\)"),
        # more than every env of the server at once: over the request limit, never parsed
        ([RESET_BOTH, steps(np.zeros(20_000, int), envs=range(5, 20_005))],
         "RESOURCE_EXHAUSTED", "larger than max"),
        ([pb.StepRequest(resets=[pb.Reset(env=0)], step_envs=[0], actions=tensors.encode(
            np.array([0])))], "INVALID_ARGUMENT", "either reset or stepped"),
        ([steps([0, 1])], "FAILED_PRECONDITION", r"reset envs \[0, 1\] before stepping"),
    ],
)  # fmt: skip
def test_bad_steps_get_their_status_and_the_server_serves_on(server, requests, code, message):
    error = bad_stream(server.address, requests)
    assert error.code().name == code
    assert __import__("re").search(message, error.details()), error.details()
    env = gymnasium.make(ID, server=server.address, obs_type="latent")
    env.reset(seed=0)
    env.step(0)  # everyone else is still served
    env.close()


def test_sessions_and_envs_beyond_the_limits_are_refused(server):
    dream, channel = stub(server.address)
    with channel:
        with pytest.raises(grpc.RpcError) as caught:
            dream.OpenSession(pb.OpenSessionRequest(num_envs=MAX_ENVS + 1), timeout=5)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "--max-envs" in caught.value.details()
        with pytest.raises(grpc.RpcError) as caught:
            dream.OpenSession(pb.OpenSessionRequest(num_envs=0), timeout=5)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        opened = []
        with pytest.raises(grpc.RpcError) as caught:
            for _ in range(41):
                opened.append(dream.OpenSession(pb.OpenSessionRequest(num_envs=1), timeout=5))
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "--max-sessions" in caught.value.details() and len(opened) == 40
        for session in opened:
            dream.CloseSession(pb.CloseSessionRequest(session_id=session.session_id), timeout=5)
        with pytest.raises(grpc.RpcError) as caught:
            dream.CloseSession(pb.CloseSessionRequest(session_id="nope"), timeout=5)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(RuntimeError, match=r"\(RESOURCE_EXHAUSTED\)"):
        gymnasium.make_vec(ID, num_envs=MAX_ENVS + 1, server=server.address)


def test_unknown_sessions_and_second_streams_are_refused(server):
    dream, channel = stub(server.address)
    with channel:
        with pytest.raises(grpc.RpcError) as caught:
            list(run_call(dream, "no-such-session", [RESET_BOTH]))
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        session = dream.OpenSession(pb.OpenSessionRequest(num_envs=1), timeout=5).session_id
        requests = __import__("queue").SimpleQueue()
        first = run_call(dream, session, iter(requests.get, None))
        requests.put(pb.StepRequest(resets=[pb.Reset(env=0)]))
        next(first)  # answered: the first stream drives the session
        with pytest.raises(grpc.RpcError) as caught:
            list(run_call(dream, session, [pb.StepRequest(resets=[pb.Reset(env=0)])]))
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "another Run stream" in caught.value.details()
        with pytest.raises(grpc.RpcError) as caught:  # its rows are in use: not closed under it
            dream.CloseSession(pb.CloseSessionRequest(session_id=session), timeout=5)
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        requests.put(None)
        assert list(first) == []  # ended by the client: the session ends with it
    wait_until(lambda: free_envs(server.address) == MAX_ENVS)  # the cancelled stream's session


def test_an_oversized_message_is_refused_and_the_server_serves_on(server):
    error = bad_stream(server.address, [pb.StepRequest(step_envs=[0], actions=pb.Tensor(
        dtype="uint8", shape=[2**21], data=bytes(2**21)))])  # fmt: skip
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    env = gymnasium.make(ID, server=server.address, obs_type="latent")
    env.reset(seed=0)
    env.step(0)
    env.close()


def test_idle_sessions_are_reaped(server):
    dream, channel = stub(server.address)
    with channel:
        dream.OpenSession(pb.OpenSessionRequest(num_envs=3), timeout=5)
        assert free_envs(server.address) == MAX_ENVS - 3
    wait_until(lambda: free_envs(server.address) == MAX_ENVS, timeout=5)
    server.wait_for_log("event=session_reaped")


def test_a_client_killed_mid_stream_frees_its_envs(server):
    kill_a_stepping_client(server, server.address, MAX_ENVS)


def test_the_python_random_agent_example_plays_remote_dreams(server):
    script = Path(__file__).resolve().parents[2] / "clients/examples/random_agent.py"
    # long enough for random play to end episodes: the default dream ends about 4 per 1,000 steps
    command = [sys.executable, script, "--server", server.address, "--envs", "8", "--steps", "300"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "8 envs x 300 steps" in result.stdout and "episodes ended" in result.stdout


def test_an_env_dropped_without_close_frees_its_envs(server):
    env = gymnasium.make(ID, server=server.address, obs_type="latent")
    env.reset(seed=0)
    assert free_envs(server.address) == MAX_ENVS - 1
    del env
    __import__("gc").collect()
    wait_until(lambda: free_envs(server.address) == MAX_ENVS)


def test_a_new_session_does_not_inherit_the_random_streams_of_its_rows(server):
    dream, channel = stub(server.address)
    with channel:
        contexts = []
        for seeds in ([5, 6, 7, 8], [None] * 4):  # the second session reuses the same rows
            session = dream.OpenSession(pb.OpenSessionRequest(num_envs=4), timeout=5).session_id
            resets = [
                pb.Reset(env=i, seed=s) if s else pb.Reset(env=i) for i, s in enumerate(seeds)
            ]
            answer = next(run_call(dream, session, [pb.StepRequest(resets=resets)]))
            contexts.append(tensors.decode(answer.contexts, "contexts"))
            wait_until(lambda: free_envs(server.address) == MAX_ENVS)
    inherited = []
    for seed in (5, 6, 7, 8):  # what continuing the first owner's generators would draw
        rng = seeding.np_random(seed)[0]
        assert rng.integers(NUM_CONTEXTS) == contexts[0][len(inherited)]  # the first session's
        inherited.append(rng.integers(NUM_CONTEXTS))
    assert contexts[1].tolist() != inherited  # fresh entropy: equal by chance once in 64**4


def test_the_metrics_line_reports_throughput_and_queue_delay(server):
    env = gymnasium.make(ID, server=server.address, obs_type="latent")
    env.reset(seed=0)
    for _ in range(20):
        env.step(0)
    env.close()
    line = server.wait_for_log(r"event=metrics steps_per_s=[1-9]")
    assert "batch_fill=" in line and "queue_delay_ms_p99=" in line


def test_a_wrong_or_missing_token_is_unauthenticated():
    with served("--token", "s3cret") as server:
        for token in (None, "wrong"):
            with pytest.raises(PermissionError, match="missing or wrong bearer token"):
                gymnasium.make(ID, server=server.address, token=token)
        env = gymnasium.make(ID, server=server.address, token="s3cret", obs_type="latent")
        env.reset(seed=0)
        env.step(0)
        env.close()
        channel = grpc.insecure_channel(server.address)  # health checks need no token
        answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_tls_serves_clients_that_trust_the_certificate(tmp_path):
    cert, key = self_signed(tmp_path, "IP:127.0.0.1")
    with served("--tls-cert", cert, "--tls-key", key) as server:
        env = gymnasium.make(ID, server=server.address, tls=cert, obs_type="latent")
        env.reset(seed=0)
        env.step(0)
        env.close()
        with pytest.raises(ConnectionError, match="cannot be reached"):
            gymnasium.make(ID, server=server.address, timeout=5)  # plain TCP to a TLS port


def test_an_unreachable_server_is_a_clear_error():
    started = time.monotonic()
    with pytest.raises(ConnectionError, match=r"127.0.0.1:9 cannot be reached.*wmsim serve"):
        gymnasium.make(ID, server="127.0.0.1:9", timeout=5)
    assert time.monotonic() - started < 5


def test_a_stalled_server_hits_the_deadline_and_sigterm_drains_and_exits_0():
    with served() as server:
        envs = gymnasium.make_vec(ID, num_envs=2, server=server.address, timeout=1.5)
        envs.reset(seed=0)
        server.process.send_signal(__import__("signal").SIGSTOP)
        try:
            with pytest.raises(TimeoutError, match=r"no answer within 1.5 s"):
                envs.step(np.zeros(2, int))
        finally:
            server.process.send_signal(__import__("signal").SIGCONT)
        envs.close()
        stepper = gymnasium.make_vec(ID, num_envs=2, server=server.address)
        stepper.reset(seed=0)
        errors, answered = [], [0]

        def keep_stepping():
            try:
                while True:
                    stepper.step(np.zeros(2, int))
                    answered[0] += 1
            except Exception as error:  # the one way out: the server went away
                errors.append(error)

        thread = threading.Thread(target=keep_stepping)
        thread.start()
        wait_until(lambda: answered[0] > 5)
        assert server.stop() == 0
        thread.join(10)
        assert not thread.is_alive() and len(errors) == 1
        assert isinstance(errors[0], ConnectionError), errors[0]
        assert "shutting down" in str(errors[0]) or "went away" in str(errors[0])
        server.wait_for_log("event=draining")
        server.wait_for_log("event=stopped")
        with pytest.raises(ConnectionError, match="broke earlier"):
            stepper.step(np.zeros(2, int))
        stepper.close()


def test_a_bounded_load_of_32_clients_finishes_without_errors():
    clients, steps = 32, 200
    with served("--max-sessions", clients, "--max-envs", clients) as server:
        envs = [
            gymnasium.make(ID, server=server.address, obs_type="latent") for _ in range(clients)
        ]
        latencies, errors = [], []
        barrier = threading.Barrier(clients)

        def run(env, seed):
            try:
                env.reset(seed=seed)
                barrier.wait()
                for t in range(steps):
                    start = time.perf_counter()
                    _, _, terminated, truncated, _ = env.step(t % 4)
                    latencies.append(time.perf_counter() - start)
                    if terminated or truncated:
                        env.reset()
            except Exception as error:
                errors.append(error)

        threads = [threading.Thread(target=run, args=(e, i)) for i, e in enumerate(envs)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(300)
        seconds = time.perf_counter() - started
        for env in envs:
            env.close()
    assert not errors, errors[:3]
    assert len(latencies) == clients * steps
    p50, p99 = np.percentile(np.array(latencies) * 1000, [50, 99])
    print(f"\n{clients} clients x {steps} steps in {seconds:.1f} s: "
          f"{clients * steps / seconds:.0f} steps/s, step latency p50 {p50:.2f} ms, "
          f"p99 {p99:.2f} ms")  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-batch", "0"], "--max-batch must be at least 1"),
        (["--tls-cert", "cert.pem"], "TLS needs both --tls-cert and --tls-key"),
        (["--model", "no-such.wmsim"], "no model bundle 'no-such.wmsim'"),
        (["--host", "192.0.2.1", "--port", "0"], "cannot bind 192.0.2.1:0"),
        (["--decoder", "fast"], "--decoder must be one of auto, onnxruntime, openvino"),
    ],
)
def test_bad_serve_options_are_one_line_errors(args, message):
    result = subprocess.run([sys.executable, "-m", "wmsim", "serve", *args],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 2 and message in result.stderr
    assert "Traceback" not in result.stderr


LOGGING = """
import asyncio, logging
import wmsim_server.serve as serve_module
from wmsim_server.service import event

async def fake_run_server(args):
    event("serving")  # one line a run
    return 0

serve_module.run_server = fake_run_server
logger = logging.getLogger("wmsim.serve")
for _ in range(3):
    serve_module.serve(serve_module.ServeArgs())
print(len(logger.handlers), logger.level, logger.propagate)
logging.basicConfig(format="root %(message)s")  # the caller's own setup decides
logging.getLogger().setLevel(logging.INFO)
serve_module.serve(serve_module.ServeArgs())
print(len(logger.handlers), logger.level, logger.propagate)
"""


def test_serve_called_again_logs_each_line_once_and_leaves_logging_as_it_was():
    result = subprocess.run([sys.executable, "-c", LOGGING], capture_output=True, text=True,
                            timeout=60, check=True)  # fmt: skip
    lines = result.stderr.splitlines()
    assert [line.split()[1:] for line in lines[:3]] == [["level=info", "event=serving"]] * 3
    assert lines[3:] == ["root serving"]  # no logfmt handler of ours besides the caller's
    assert result.stdout.splitlines() == ["0 0 True"] * 2


def test_start_states_are_computed_before_serving_unless_told_not_to():
    """On a warm server no reset pays for its start context (10-30 ms for its whole batch)."""
    with served("--warm-starts", "--max-envs", "4") as server:
        contexts = spec(server.address).num_contexts
        events = [line.split()[2] for line in server.logs]
        assert events.index("event=warmed") < events.index("event=serving")
        assert f"contexts={contexts} " in server.wait_for_log("event=warmed")
    with served("--max-envs", "4", "--no-warm-starts") as server:
        assert not any("event=warmed" in line for line in server.logs)


def test_the_server_decodes_with_the_decoder_it_is_given():
    """``--decoder onnxruntime``: served frames are the exported graph's, bit for bit what an
    in-process env with ``decoder="onnxruntime"`` shows for the same seed."""
    with served("--warm-starts", "--max-envs", "2", "--decoder", "onnxruntime") as server:
        assert "decoder=onnxruntime " in server.wait_for_log("event=serving")
        actions = [1, 0, 3, 2, 2, 1, 0, 0]
        remote = gymnasium.make(ID, server=server.address)
        local = gymnasium.make(ID, decoder="onnxruntime")
        try:
            frames = [[env.reset(seed=3)[0]] + [env.step(a)[0] for a in actions]
                      for env in (remote, local)]  # fmt: skip
        finally:
            remote.close()
            local.close()
    for served_frame, local_frame in zip(*frames, strict=True):
        np.testing.assert_array_equal(served_frame, local_frame)
