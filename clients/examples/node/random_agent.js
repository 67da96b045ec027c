#!/usr/bin/env node
// A random agent playing N dreams of a `wmsim serve` over gRPC, from the same
// dream.proto the Python client uses. Usage:
//   node random_agent.js [--server 127.0.0.1:50051] [--envs 4] [--steps 200] [--seed 0]
// Env i is reset with seed seed + i (as the Python vector env seeds its envs), and
// actions come from a PRNG seeded with --seed, so a run is reproducible.
// The last line printed is one JSON object with the run's numbers.
'use strict';

const path = require('path');
const { parseArgs } = require('util');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTO = path.join(__dirname, '..', '..', '..', 'proto', 'wmsim', 'rpc', 'v1', 'dream.proto');
const UNARY_TIMEOUT_MS = 10000;

const DEFAULTS = { server: '127.0.0.1:50051', envs: '4', steps: '200', seed: '0' };
const USAGE = 'usage: node random_agent.js '
  + Object.entries(DEFAULTS).map(([name, value]) => `[--${name} ${value}]`).join(' ');

function cli() {
  try {
    const options = { help: { type: 'boolean', short: 'h' } };
    for (const [name, value] of Object.entries(DEFAULTS)) {
      options[name] = { type: 'string', default: value };
    }
    const { values } = parseArgs({ options });
    if (values.help) {
      console.log(USAGE);
      process.exit(0);
    }
    const [envs, steps, seed] = [values.envs, values.steps, values.seed].map(Number);
    const integers = [envs, steps, seed].every(Number.isSafeInteger);
    if (!(integers && envs >= 1 && steps >= 0 && seed >= 0)) {
      throw new Error('--envs must be an integer >= 1, --steps and --seed integers >= 0');
    }
    return { server: values.server, envs, steps, seed };
  } catch (error) {
    console.error(`${error.message}\n${USAGE}`);
    process.exit(2);
  }
}
const { server, envs: numEnvs, steps: numSteps, seed } = cli();

// mulberry32: a tiny seeded PRNG, uniform in [0, 1).
function mulberry32(a) {
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// A Tensor's items: data holds prod(shape) items of dtype, little-endian, C order.
// uint8 (frames) come back as the Buffer itself, a Uint8Array; other dtypes as an Array.
// Buffer's read*LE take any offset: the bytes sliced out of a message may start at an
// odd byteOffset, where a Float32Array or BigInt64Array view would throw.
const ITEM = {
  uint8: [1, null],
  bool: [1, (b, i) => b[i] !== 0],
  float32: [4, (b, i) => b.readFloatLE(4 * i)],
  int64: [8, (b, i) => Number(b.readBigInt64LE(8 * i))],
};
function decode(tensor, what) {
  const count = tensor.shape.map(Number).reduce((a, b) => a * b, 1);
  const [size, read] = ITEM[tensor.dtype] || [0, null];
  if (!size || tensor.data.length !== count * size) {
    throw new Error(`${what}: unexpected ${tensor.dtype} tensor [${tensor.shape}] `
      + `of ${tensor.data.length} bytes`);
  }
  return read ? Array.from({ length: count }, (_, i) => read(tensor.data, i)) : tensor.data;
}

function int64Tensor(values) {
  const data = Buffer.alloc(8 * values.length);
  values.forEach((v, i) => data.writeBigInt64LE(BigInt(v), 8 * i));
  return { dtype: 'int64', shape: [values.length], data };
}

async function main() {
  const definition = protoLoader.loadSync(PROTO, {
    keepCase: true, longs: String, enums: String, defaults: true, oneofs: true,
  });
  const { Dream } = grpc.loadPackageDefinition(definition).wmsim.rpc.v1;
  const client = new Dream(server, grpc.credentials.createInsecure(), {
    'grpc.max_receive_message_length': 256 * 2 ** 20, // many envs' frames pass 4 MiB
  });
  const auth = new grpc.Metadata();
  if (process.env.WMSIM_TOKEN) auth.set('authorization', `Bearer ${process.env.WMSIM_TOKEN}`);
  const unary = (method, request) => new Promise((resolve, reject) => {
    client[method](request, auth, { deadline: Date.now() + UNARY_TIMEOUT_MS },
      (error, response) => (error ? reject(error) : resolve(response)));
  });
  let call = null;
  try {
    const info = await unary('GetSpec', {});
    const spec = JSON.parse(info.spec_json);
    const numActions = spec.actions.length;
    const frameBytes = spec.observation.shape.reduce((a, b) => a * b, 1);
    console.log(`${spec.game}: ${numActions} actions (${spec.actions.join(', ')}), `
      + `obs ${spec.observation.shape.join('x')}; wmsim ${info.server_version} on ${info.device}, `
      + `${info.free_envs}/${info.max_envs} envs free`);
    const { session_id: session } = await unary('OpenSession',
      { num_envs: numEnvs, obs_type: 'OBS_TYPE_PIXELS' });
    console.log(`session ${session.slice(0, 8)}: ${numEnvs} envs`);

    // Run: one response per request, in order; we keep exactly one request in flight.
    const metadata = auth.clone();
    metadata.set('wmsim-session', session);
    call = client.Run(metadata);
    const responses = call[Symbol.asyncIterator](); // rejects with the status on an error
    const exchange = async (request) => {
      call.write(request);
      const { value, done } = await responses.next();
      if (done) throw new Error('the server ended the stream early');
      return value;
    };

    const envs = [...Array(numEnvs).keys()];
    const first = await exchange({ resets: envs.map((env) => ({ env, seed: seed + env })) });
    const firstObsSum = decode(first.reset_obs, 'reset_obs').subarray(0, frameBytes)
      .reduce((a, b) => a + b, 0);

    const random = mulberry32(seed);
    let terminated = new Array(numEnvs).fill(false);
    let episodesEnded = 0, autoresets = 0, rewardSum = 0;
    const start = process.hrtime.bigint();
    for (let t = 0; t < numSteps; t++) {
      // NEXT_STEP autoreset: an env that terminated last step is reset now, not stepped.
      const resets = envs.filter((e) => terminated[e]).map((env) => ({ env }));
      const stepEnvs = envs.filter((e) => !terminated[e]);
      const actions = stepEnvs.map(() => Math.floor(random() * numActions));
      const response = await exchange(
        { resets, step_envs: stepEnvs, actions: int64Tensor(actions) });
      const done = decode(response.terminated, 'terminated');
      rewardSum += decode(response.reward, 'reward').reduce((a, b) => a + b, 0);
      terminated = new Array(numEnvs).fill(false);
      stepEnvs.forEach((env, i) => { terminated[env] = done[i]; });
      episodesEnded += done.filter(Boolean).length;
      autoresets += resets.length;
    }
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    call.end(); // half-close: the server's handler returns and the stream ends OK
    await responses.next();
    try {
      await unary('CloseSession', { session_id: session });
    } catch (error) { // servers that end a session with its stream have closed it already
      if (error.code !== grpc.status.NOT_FOUND) throw error;
    }

    // env_steps counts vector-env slots (envs x steps), autoresets included, as gymnasium does.
    const envSteps = numEnvs * numSteps;
    const stepsPerS = Math.round((envSteps / seconds) * 10) / 10;
    console.log(`${numSteps} steps of ${numEnvs} envs in ${seconds.toFixed(2)} s `
      + `(${stepsPerS} env steps/s): ${episodesEnded} episodes ended, `
      + `reward sum ${rewardSum.toFixed(2)}`);
    console.log(JSON.stringify({
      game: spec.game, envs: numEnvs, steps: numSteps, env_steps: envSteps, autoresets,
      episodes_ended: episodesEnded, reward_sum: rewardSum, steps_per_s: stepsPerS,
      first_obs_sum: firstObsSum,
    }));
  } finally {
    if (call) call.cancel(); // no-op once the stream has ended
    client.close();
  }
}

main().catch((error) => {
  if (typeof error.code === 'number') { // a gRPC status
    console.error(`error: ${grpc.status[error.code]} (${error.code}): ${error.details}`);
  } else {
    console.error(`error: ${error.stack || error}`);
  }
  process.exitCode = 1;
});
