// The measured capacity (jobs/s the server sustains) every other script scales
// its arrival rates from. Never guessed: CAPACITY=<jobs/s> from the environment,
// or the file capacity.js wrote (CAPACITY_FILE, default loadtest/results/capacity.json).
//
// open() only works in the init context, so call loadCapacity() at module level.

export const DEFAULT_CAPACITY_FILE = import.meta.resolve('../results/capacity.json');

export function capacityFile() {
  return __ENV.CAPACITY_FILE || DEFAULT_CAPACITY_FILE;
}

// Returns the capacity file's figures plus `mix`: the rate the scripts that send
// the mix (load, stress, spike, soak) scale from. That is the mix's own measured
// capacity (mix_jobs_per_second) when the file has it: in fork mode a job that
// sleeps holds one of PYEXEC_MAX_JOBS slots for its whole run, so with few
// slots the mix's 5% of timeouts bounds it below hello-world's figure, and
// the mix's sleeps always lower it. CAPACITY=<jobs/s> sets
// `mix` (and the hello-world figure) directly.
export function loadCapacity() {
  if (__ENV.CAPACITY) {
    const c = Number(__ENV.CAPACITY);
    if (!(c > 0)) throw new Error(`CAPACITY=${__ENV.CAPACITY} must be a positive number of jobs/s`);
    return { jobs_per_second: c, mix: c, source: 'env CAPACITY' };
  }
  const path = capacityFile();
  let text;
  try {
    text = open(path);
  } catch (e) {
    throw new Error(
      `no capacity known: run "k6 run loadtest/capacity.js" first (it writes ${path}) ` +
        `or set CAPACITY=<jobs/s>`,
    );
  }
  const c = JSON.parse(text);
  if (!(c.jobs_per_second > 0)) throw new Error(`${path} holds no positive jobs_per_second`);
  c.mix = c.mix_jobs_per_second > 0 ? c.mix_jobs_per_second : c.jobs_per_second;
  c.source = `${path}, ${c.mix_jobs_per_second > 0 ? 'the mix' : 'hello-world'}`;
  return c;
}
