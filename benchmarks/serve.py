"""Served dreams against in-process dreams, and many small clients against one big one, in one run.

For pixel and latent observations, with random actions and NEXT_STEP autoreset:

- in-process: one ``DreamVectorEnv`` of ``--batch`` envs in this process;
- remote, 1 client: a vector env of ``--batch`` envs in this process on a ``wmsim serve``
  started here (the same bundle and device; both sides take their default threads, one per
  core, unless ``--threads`` is given), as an RL library's process would hold it;
- remote, N clients: ``--clients`` processes with ``--batch / --clients`` envs each,
  stepping at once, so the batcher must merge them to keep up;
- the same two over the same-host transport (``--socket``, ``server="local:PATH"``: a Unix
  socket and shared memory, :mod:`wmsim_client.same_host`), rows named ``same-host``;
- with ``--replicas N`` (N >= 2), remote on N replicas: one client of ``--batch`` envs
  spread over N ``wmsim serve`` replicas (:mod:`wmsim_client.replicas`), stepping them at
  once. Here every replica runs on this machine's cores and device: on a small CPU the row
  shows that the fan-out works and what it costs, not the speed-up that one replica per GPU
  (or per machine) gives.

Throughput is env steps per second over all envs (a row restarted by autoreset
counts, the same on every side: the seeds make the same episodes). Latency is
one vector step as a client sees it; envs/call, the server's env steps per
model call, shows the batcher merging clients. All three run with the malloc
setting of :mod:`wmsim.rpc.memory` (the server, every client and this process,
whose in-process dreams gain from it too) unless ``--no-tune-malloc`` leaves
malloc alone everywhere. The in-process env observes its start contexts before
timing, as the server does before it serves.

In-process and the one-client setups are timed in turns, ``--rounds`` times, all open at once:
their ratio is the median of the rounds' ratios (each round's remote rate over the same round's
in-process rate), printed with its range, and their rates are the rounds' medians. On a small
shared machine the rate of a setup moves by 10% from one second to the next, which separate
best-of runs turned into ratios that moved by as much. The many-client setups run
``--repeats`` times, interleaved; the best run counts. Targets on a 2-core CPU:
remote at least 0.9 (pixels) and 0.8 (latents) of in-process at batch 64, and
16 x 4 at least 0.8 of 1 x 64; both are checked for each transport.

    python benchmarks/serve.py [--bundle PATH] [--batch 64] [--clients 16] [--steps 200]
                               [--rounds 6] [--replicas 2] [--no-tune-malloc]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import queue
import re
import subprocess
import sys
import tempfile
import threading
import time
from functools import partial
from pathlib import Path

import numpy as np

WARMUP = 10
LATENT_LONGER = 10
"""A latent vector step of 64 envs takes about 0.5 ms, a pixel one about 5: in-process and one
client of latent envs take this many times ``--steps``, so that they too are timed for about a
second (200 steps, 0.1 s, moved their ratio by 0.1 between runs)."""
TARGETS = {"remote": {"pixels": 0.9, "latent": 0.8}, "clients": {"pixels": 0.8, "latent": 0.8}}
"""Issue 19, on a 2-core CPU: remote over in-process at batch 64, and 16 x 4 over 1 x 64."""


def start_server(
    bundle: Path, device: str, threads: int | None, tune_malloc: bool, socket: Path | None = None
) -> tuple[subprocess.Popen, str]:
    """A ``wmsim serve`` on a free port (and ``socket``); (process, ``127.0.0.1:PORT``)."""
    command = [sys.executable, "-m", "wmsim", "serve", "--model", str(bundle), "--port", "0",
               "--device", device, "--max-envs", "1024", "--metrics-every-s", "0",
               "--tune-malloc" if tune_malloc else "--no-tune-malloc"]  # fmt: skip
    if threads:
        command += ["--threads", str(threads)]
    if socket is not None:
        command += ["--socket", str(socket)]
    server = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    for line in server.stderr:
        found = re.search(r"event=serving address=([^ ]+)", line)
        if found:
            # keep draining its log so it never blocks on a full pipe
            threading.Thread(target=server.stderr.read, daemon=True).start()
            return server, found.group(1)
    raise RuntimeError(f"wmsim serve did not start (exit status {server.wait()})")


def drive(envs, steps: int, seed: int) -> tuple[float, float, list[float]]:
    """Step ``envs`` after a warm-up -> (start, end on the monotonic clock, latencies)."""
    rng = np.random.default_rng(seed)
    envs.reset(seed=seed)
    for _ in range(WARMUP):
        envs.step(rng.integers(envs.single_action_space.n, size=envs.num_envs))
    latencies = []
    start = time.monotonic()
    for _ in range(steps):
        actions = rng.integers(envs.single_action_space.n, size=envs.num_envs)
        tick = time.perf_counter()
        envs.step(actions)
        latencies.append(time.perf_counter() - tick)
    return start, time.monotonic(), latencies


def client(address, num_envs, obs_type, steps, seed, barrier, results, tune_malloc) -> None:
    """One remote client process: make its envs, wait for the others, step."""
    import gymnasium

    import wmsim  # noqa: F401  registers the ids

    envs = gymnasium.make_vec("wmsim/Breakout-dream-v0", num_envs=num_envs, server=address,
                              obs_type=obs_type, timeout=120, tune_malloc=tune_malloc)  # fmt: skip
    envs.reset(seed=seed)
    barrier.wait()
    results.put(drive(envs, steps, seed))
    envs.close()


def counters(address: str | list[str]) -> tuple[int, int]:
    """The server's (envs stepped, model calls) so far; summed over replicas given as a list."""
    import grpc

    from wmsim.rpc.v1 import dream_pb2 as pb
    from wmsim.rpc.v1 import dream_pb2_grpc as pb_grpc

    stepped = calls = 0
    for server in [address] if isinstance(address, str) else address:
        with grpc.insecure_channel(server) as channel:
            spec = pb_grpc.DreamStub(channel).GetSpec(pb.GetSpecRequest(), timeout=30)
        stepped, calls = stepped + spec.envs_stepped, calls + spec.model_calls
    return stepped, calls


def remote(
    address, clients, num_envs, obs_type, steps, tune_malloc, threads=False, counted=None
) -> tuple[float, list[float], float]:
    """(env steps/s over all clients, every step's latency, envs per model call).

    Clients are processes, or with ``threads`` threads of one process (16 client processes and
    the model do not fit two cores; threads share one Python runtime, as an RL library's
    vectorized workers may). ``counted``: the gRPC address whose counters to read, where
    ``address`` is a same-host one.
    """
    counted = counted or address
    if threads:
        barrier, results = threading.Barrier(clients), queue.Queue()
        make = threading.Thread
    else:
        context = multiprocessing.get_context("spawn")
        barrier, results = context.Barrier(clients), context.Queue()
        make = context.Process
    processes = [make(target=client, args=(address, num_envs, obs_type, steps, 1000 * i, barrier,
                                           results, tune_malloc))
                 for i in range(clients)]  # fmt: skip
    for process in processes:
        process.start()
    stepped, calls = counters(counted)
    runs = [results.get(timeout=600) for _ in processes]
    for process in processes:
        process.join()
    stepped_after, calls_after = counters(counted)  # the warm-ups count too: same batching
    seconds = max(end for _, end, _ in runs) - min(start for start, _, _ in runs)
    per_call = (stepped_after - stepped) / max(calls_after - calls, 1)
    return clients * num_envs * steps / seconds, [t for *_, lat in runs for t in lat], per_call


def paired(  # noqa: D417 (the benchmark's own options are grouped)
    bundle, batch, obs_type, steps, rounds, device, threads, tune_malloc, served, counted
) -> dict[str, tuple[list[float], list[float], float]]:
    """In-process and one client per transport, timed in turns for ``rounds`` rounds.

    Args:
        bundle, batch, obs_type, device, threads, tune_malloc: as for the whole benchmark.
        steps: vector steps a setup takes in each round.
        rounds: rounds of every setup in turn.
        served: setup name -> server address, for the one-client setups.
        counted: the gRPC address whose counters give envs per model call.

    Returns:
        Per setup (in-process first): each round's env steps/s, every step's latency, envs
        per model call.
    """
    import gymnasium
    from wmsim_client.vector import DreamVectorEnv

    import wmsim  # noqa: F401  registers the ids

    envs = {"local": DreamVectorEnv(batch, model=bundle, obs_type=obs_type, device=device,
                                    threads=threads)}  # fmt: skip
    runtime = envs["local"].simulator.dreams.runtime  # start states observed, as served ones
    runtime.observe_contexts(np.arange(runtime.num_contexts))
    for name, address in served.items():
        envs[name] = gymnasium.make_vec("wmsim/Breakout-dream-v0", num_envs=batch, server=address,
                                        obs_type=obs_type, timeout=120,
                                        tune_malloc=tune_malloc)  # fmt: skip
    results = {name: ([], [], []) for name in envs}
    try:
        for round_ in range(rounds):
            for name, envs_ in envs.items():
                before = counters(counted) if name != "local" else (0, 0)
                start, end, latencies = drive(envs_, steps, 1000 * round_)
                after = counters(counted) if name != "local" else (batch, 1)
                rates, every, per_call = results[name]
                rates.append(batch * steps / (end - start))
                every.extend(latencies)
                per_call.append((after[0] - before[0]) / max(after[1] - before[1], 1))
    finally:
        for envs_ in envs.values():
            envs_.close()
    return {name: (rates, every, float(np.median(per_call)))
            for name, (rates, every, per_call) in results.items()}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", type=Path, help="default: the Breakout model wmsim ships")
    parser.add_argument("--batch", type=int, default=64, help="envs in all")
    parser.add_argument("--clients", type=int, default=16, help="clients sharing --batch envs")
    parser.add_argument(
        "--steps", type=int, default=200,
        help=f"vector steps per measurement ({LATENT_LONGER} times as many for one latent client)",
    )  # fmt: skip
    parser.add_argument(
        "--rounds", type=int, default=6,
        help="rounds of in-process and one client each, timed in turns",
    )  # fmt: skip
    parser.add_argument("--repeats", type=int, default=2, help="runs of the many-client setups")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (both sides)")
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime threads")
    parser.add_argument("--obs", nargs="+", default=["pixels", "latent"])
    parser.add_argument(
        "--replicas", type=int, default=1, help="2 or more: add a row of one client over them"
    )
    parser.add_argument(
        "--client-threads", action="store_true",
        help="add a row of the --clients clients as threads of one process",
    )  # fmt: skip
    parser.add_argument(
        "--no-tune-malloc",
        dest="tune_malloc",
        action="store_false",
        help="leave malloc alone in the server, the clients and this process",
    )
    args = parser.parse_args()
    if args.batch % args.clients:
        parser.error("--batch must be a multiple of --clients")
    import grpc
    import onnxruntime

    from wmsim.store import resolve_model

    bundle = args.bundle or resolve_model("Breakout")
    if args.tune_malloc:
        from wmsim.rpc.memory import keep_freed_memory

        keep_freed_memory()  # for the in-process dreams, as the server and clients do
    folder = tempfile.TemporaryDirectory(dir="/tmp")  # a socket path must stay short
    near = Path(folder.name) / "wmsim.sock"
    servers = [start_server(bundle, args.device, args.threads, args.tune_malloc,
                            near if i == 0 else None)
               for i in range(max(1, args.replicas))]  # fmt: skip
    address, replicas = servers[0][1], [a for _, a in servers]
    local_address = f"local:{near}"
    try:
        from wmsim_client.remote import RemoteSimulator

        probe = RemoteSimulator(address, 1, obs_type="latent")
        device = probe.device
        probe.close()
        small = args.batch // args.clients
        malloc = "tuned" if args.tune_malloc else "default"
        print(f"{platform.machine()}, {os.cpu_count()} CPUs, device {device}, onnxruntime "
              f"{onnxruntime.__version__}, grpcio {grpc.__version__}, malloc {malloc}, "
              f"{bundle}")  # fmt: skip
        print(
            "env steps/s over all envs; latency of one vector step as its client sees it; "
            "grpc: over loopback TCP, same-host: a Unix socket and shared memory"
        )
        if len(replicas) > 1:
            print(f"the {len(replicas)} replicas share this machine's CPUs and device: their "
                  "row checks the fan-out, it is no speed-up figure")  # fmt: skip
        print(f"{'obs':8s}{'setup':31s}{'steps/s':>9s}{'ratio':>14s}{'p50 ms':>9s}{'p99 ms':>9s}"
              f"{'envs/call':>10s}")  # fmt: skip
        ratios: dict[str, dict[str, tuple[float, float]]] = {}
        for obs_type in args.obs:
            local = f"in-process 1 x {args.batch}"
            common = (obs_type, args.steps, args.tune_malloc)
            steps = args.steps * (LATENT_LONGER if obs_type == "latent" else 1)
            transports = (("grpc", address), ("same-host", local_address))
            ones = {
                f"{transport} 1 client x {args.batch}": where for transport, where in transports
            }
            turns = paired(bundle, args.batch, obs_type, steps, args.rounds, args.device,
                           args.threads, args.tune_malloc, ones, address)  # fmt: skip
            local_rates, local_latencies, _ = turns.pop("local")
            best = {local: (float(np.median(local_rates)), local_latencies, float(args.batch))}
            per_round = {}  # one client over in-process, round by round
            for name, (rates, latencies, per_call) in turns.items():
                best[name] = (float(np.median(rates)), latencies, per_call)
                per_round[name] = np.array(rates) / np.array(local_rates)
            order, setups = [local], {}
            for transport, where in transports:
                counted = None if transport == "grpc" else address
                one = f"{transport} 1 client x {args.batch}"
                many = f"{transport} {args.clients} clients x {small}"
                setups[many] = (
                    partial(remote, where, args.clients, small, *common, counted=counted),
                    one,
                )
                order += [one, many]
                if args.client_threads:
                    setups[f"{transport} {args.clients} threads x {small}"] = (
                        partial(remote, where, args.clients, small, *common, threads=True,
                                counted=counted), one)  # fmt: skip
                    order.append(f"{transport} {args.clients} threads x {small}")
            if len(replicas) > 1:
                name = f"grpc 1 x {args.batch} on {len(replicas)} replicas"
                alone = partial(remote, replicas, 1, args.batch, obs_type, steps, args.tune_malloc)
                setups[name] = (alone, f"grpc 1 client x {args.batch}")
                order.append(name)
            for _ in range(args.repeats):
                for name, (run, _) in setups.items():
                    result = run()
                    if name not in best or result[0] > best[name][0]:
                        best[name] = result
            for name in order:
                rate, latencies, per_call = best[name]
                if name in per_round:
                    ratio = f"{np.median(per_round[name]):.2f} x local"
                elif name in setups:
                    against = setups[name][1]
                    base = "1 srv" if "replicas" in name else "1 big"
                    ratio = f"{rate / best[against][0]:.2f} x {base}"
                else:
                    ratio = ""
                p50, p99 = np.percentile(np.array(latencies) * 1000, [50, 99])
                print(f"{obs_type:8s}{name:31s}{rate:9.0f}{ratio:>14s}{p50:9.2f}{p99:9.2f}"
                      f"{per_call:10.1f}")  # fmt: skip
            spread = ", ".join(f"{name.split()[0]} {r.min():.2f}-{r.max():.2f}"
                               for name, r in per_round.items())  # fmt: skip
            print(f"one client / in-process in each of {args.rounds} rounds, {obs_type}: {spread}")
            ratios[obs_type] = {
                transport: (
                    float(np.median(per_round[f"{transport} 1 client x {args.batch}"])),
                    best[f"{transport} {args.clients} clients x {small}"][0]
                    / best[f"{transport} 1 client x {args.batch}"][0],
                )
                for transport in ("grpc", "same-host")
            }
        checks = ((f"remote / in-process at batch {args.batch}", 0, "remote"),
                  (f"{args.clients} x {small} / 1 x {args.batch}", 1, "clients"))  # fmt: skip
        for what, k, kind in checks:
            for transport in ("grpc", "same-host"):
                found = ", ".join(
                    f"{o} {r[transport][k]:.2f} (at least {TARGETS[kind][o]}: "
                    f"{'met' if r[transport][k] >= TARGETS[kind][o] else 'not met'})"
                    for o, r in ratios.items()
                )
                print(f"target on a 2-core CPU: {what}, {transport}: {found}")
    finally:
        for server, _ in servers:
            server.terminate()
            server.wait(30)
        folder.cleanup()


if __name__ == "__main__":
    main()
