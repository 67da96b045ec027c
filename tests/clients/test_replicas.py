"""Dream envs over several real ``wmsim serve`` replicas: the same dreams, pinned sessions, loss."""

from __future__ import annotations

import json
import shutil

import grpc
import gymnasium
import numpy as np
import pytest
from serving import play, self_signed, served
from wmsim_client.replicas import Replica, ReplicatedSimulator, resolve
from wmsim_client.simulator import ReplicaLost

from wmsim.rpc.v1 import dream_pb2 as pb
from wmsim.rpc.v1 import dream_pb2_grpc as pb_grpc
from wmsim.store import EMBEDDED

ID = "wmsim/Breakout-dream-v0"
MAX_ENVS = 16
BUNDLE = EMBEDDED / "Breakout.wmsim"


def free_envs(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
        return pb_grpc.DreamStub(channel).GetSpec(pb.GetSpecRequest(), timeout=10).free_envs


def assert_same_dreams(ours, theirs):
    """Two plays of vector envs: equal observations, rewards, ends and contexts, step by step."""
    ends = 0
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(a[0], b[0], rtol=1e-5, atol=1e-5)  # observations
        if len(a) == 5:  # a step
            np.testing.assert_allclose(a[1], b[1], rtol=1e-5, atol=1e-6)
            assert np.array_equal(a[2], b[2]) and np.array_equal(a[3], b[3])
            ends += int(a[2].sum())
        if "context" in b[-1]:
            assert np.array_equal(a[-1]["context"], b[-1]["context"])
    return ends


@pytest.fixture(scope="module")
def replicas():
    with served("--max-envs", MAX_ENVS) as first, served("--max-envs", MAX_ENVS) as second:
        yield first, second


def test_names_resolve_to_every_address_and_addresses_stay_as_given():
    assert resolve(["127.0.0.1:5001", "[::1]:5002"]) == [
        Replica("127.0.0.1:5001"),
        Replica("[::1]:5002"),
    ]
    # offline, "localhost" is the one name that resolves; here it has one address, and the
    # name is kept as the channel's authority (for TLS)
    found = resolve(["localhost:5003"])
    assert found and all(r.authority == "localhost:5003" for r in found)
    assert {r.address for r in found} <= {"127.0.0.1:5003", "[::1]:5003"}
    with pytest.raises(ValueError, match="127.0.0.1:5001 more than once"):
        resolve(["127.0.0.1:5001", "127.0.0.1:5001"])
    for bad in ("127.0.0.1", "host:port", "127.0.0.1:5001", []):
        with pytest.raises(ValueError, match="host:port"):
            resolve(bad)
    with pytest.raises(ConnectionError, match="cannot resolve 'nothing.invalid'"):
        resolve(["nothing.invalid:5001"])


def test_a_session_lives_on_the_replica_that_opened_it(replicas):
    """What a balancer that routes each call anywhere does: the stream finds no session."""
    first, second = (grpc.insecure_channel(server.address) for server in replicas)
    opened = pb_grpc.DreamStub(first).OpenSession(pb.OpenSessionRequest(num_envs=1), timeout=10)
    run = pb_grpc.DreamStub(second).Run(
        iter([pb.StepRequest(resets=[pb.Reset(env=0, seed=0)])]),
        metadata=(("wmsim-session", opened.session_id),), timeout=10,
    )  # fmt: skip
    with pytest.raises(grpc.RpcError) as refused:
        next(run)
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    pb_grpc.DreamStub(first).CloseSession(
        pb.CloseSessionRequest(session_id=opened.session_id), timeout=10
    )
    first.close()
    second.close()


def test_a_vector_env_over_two_replicas_dreams_what_in_process_dreams(replicas):
    servers = [server.address for server in replicas]
    remote = gymnasium.make_vec(ID, num_envs=8, server=servers, max_episode_steps=20)
    local = gymnasium.make_vec(ID, num_envs=8, threads=1, max_episode_steps=20)
    assert [free_envs(a) for a in servers] == [MAX_ENVS - 4] * 2  # 4 sub-envs on each
    ends = assert_same_dreams(play(remote, 50, 7), play(local, 50, 7))
    assert ends > 0  # episode ends, and the time limit, brought autoresets
    remote.close()
    local.close()
    assert [free_envs(a) for a in servers] == [MAX_ENVS] * 2


def test_a_single_env_over_a_list_dreams_on_the_first_replica(replicas):
    servers = [server.address for server in replicas]
    env = gymnasium.make(ID, server=servers, render_mode="rgb_array")
    local = gymnasium.make(ID, threads=1)
    assert [free_envs(a) for a in servers] == [MAX_ENVS - 1, MAX_ENVS]
    for seed in (3, 4):
        assert np.array_equal(env.reset(seed=seed)[0], local.reset(seed=seed)[0])
        for t in range(10):
            ours, theirs = env.step(t % 4), local.step(t % 4)
            assert np.array_equal(ours[0], theirs[0]) and ours[2:4] == theirs[2:4]
    assert np.array_equal(env.render(), ours[0])
    env.close()
    local.close()


def test_replicas_of_other_models_are_refused(replicas, tmp_path):
    other = tmp_path / "Breakout.wmsim"
    shutil.copytree(BUNDLE, other)
    spec = json.loads((other / "spec.json").read_text())
    spec["training"]["seed"] += 1  # another training run of the same game, as far as a spec says
    (other / "spec.json").write_text(json.dumps(spec))
    with served("--max-envs", 2, "--model", other) as retrained:
        with pytest.raises(ValueError, match=f"different models: .* {retrained.address} differ "
                           "in training; start every replica with the same --model"):  # fmt: skip
            ReplicatedSimulator([replicas[0].address, retrained.address], 2)
    assert free_envs(replicas[0].address) == MAX_ENVS  # the first replica's session was closed


def test_a_name_keeps_its_authority_so_tls_verifies_it(tmp_path):
    cert, key = self_signed(tmp_path, "DNS:localhost")
    with served("--tls-cert", cert, "--tls-key", key) as server:
        port = server.address.rsplit(":", 1)[1]
        env = gymnasium.make(ID, server=[f"localhost:{port}"], tls=cert, obs_type="latent")
        env.reset(seed=0)
        env.step(0)
        env.close()
        # the same address without the name: the certificate names no IP, so TLS refuses it
        with pytest.raises(ConnectionError, match="cannot be reached"):
            gymnasium.make(ID, server=[server.address], tls=cert, timeout=5)


def test_a_killed_replica_fails_only_its_rows_and_a_reset_reopens_them_elsewhere():
    with served("--max-envs", MAX_ENVS) as first, served("--max-envs", MAX_ENVS) as second:
        remote = gymnasium.make_vec(ID, num_envs=8, server=[first.address, second.address])
        local = gymnasium.make_vec(ID, num_envs=8, threads=1)
        assert_same_dreams(play(remote, 10, 5), play(local, 10, 5))
        second.process.kill()  # SIGKILL: no drain, its sessions vanish mid-episode
        second.process.wait()
        with pytest.raises(ReplicaLost, match=rf"replica {second.address} went away.*rows "
                           rf"\[4, 5, 6, 7\].*Reset them.*{first.address}") as lost:  # fmt: skip
            remote.step(np.zeros(8, int))
        assert lost.value.replicas == [second.address] and lost.value.rows == [4, 5, 6, 7]
        simulator = remote.unwrapped.simulator
        stepped = simulator.step(np.arange(4), np.zeros(4, int), np.zeros(0, int))
        assert stepped.obs.shape == (4, 64, 64, 3)  # the first replica's rows step on
        with pytest.raises(ReplicaLost, match=r"rows \[4, 5, 6, 7\]"):  # the lost ones do not
            simulator.step(np.arange(4, 8), np.zeros(4, int), np.zeros(0, int))
        with pytest.raises(RuntimeError, match="call reset"):  # that step went unseen
            remote.step(np.zeros(8, int))
        # a seeded reset reopens rows 4-7 on the first replica and dreams what it dreams anywhere
        assert_same_dreams(play(remote, 20, 9), play(local, 20, 9))
        assert free_envs(first.address) == MAX_ENVS - 8
        remote.close()
        local.close()
        assert free_envs(first.address) == MAX_ENVS
