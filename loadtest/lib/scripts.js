// The Python scripts the load tests send, and what a correct answer to each is.
//
// Every entry: `source` (the body's "script"), `expect` ('ok' or the error kind),
// `status` (the HTTP status that kind maps to) and, for 'ok', `verify(body)` that
// checks the returned result and stdout beyond the generic contract.

const HELLO = `def main():
    return {"hello": "world"}
`;

// A 200x200 matmul with single-threaded BLAS: a few ms of CPU.
const NUMPY = `import numpy as np

def main():
    rng = np.random.default_rng(42)
    a = rng.standard_normal((200, 200))
    b = a @ a.T
    return {"shape": list(b.shape), "symmetric": bool(np.allclose(b, b.T)), "trace": float(np.trace(b))}
`;

// 1000 rows, 4 groups of 250: the sums are 124500, 124750, 125000, 125250.
const PANDAS = `import pandas as pd

def main():
    df = pd.DataFrame({"team": ["a", "b", "c", "d"] * 250, "score": range(1000)})
    g = df.groupby("team")["score"].agg(["sum", "mean", "count"])
    return {
        "sum": {k: int(v) for k, v in g["sum"].items()},
        "count": {k: int(v) for k, v in g["count"].items()},
        "mean_a": float(g.loc["a", "mean"]),
    }
`;

// Output at import time and in main(): both belong to "stdout".
const PRINT = `print("import-time line")

def main():
    for i in range(100):
        print(f"line {i}")
    return {"lines": 101}
`;

const RAISE = `def main():
    print("about to fail")
    raise ValueError("boom from the load test")
`;

// Sleeps, so it holds a worker until PYEXEC_TIMEOUT without burning CPU.
const TIMEOUT = `import time

def main():
    time.sleep(3600)
    return {"unreachable": True}
`;

function isObject(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

export const SCRIPTS = {
  hello: {
    source: HELLO,
    expect: 'ok',
    status: 200,
    verify: (b) => isObject(b.result) && b.result.hello === 'world' && b.stdout === '',
  },
  numpy: {
    source: NUMPY,
    expect: 'ok',
    status: 200,
    verify: (b) =>
      isObject(b.result) &&
      Array.isArray(b.result.shape) &&
      b.result.shape[0] === 200 &&
      b.result.shape[1] === 200 &&
      b.result.symmetric === true &&
      typeof b.result.trace === 'number',
  },
  pandas: {
    source: PANDAS,
    expect: 'ok',
    status: 200,
    verify: (b) =>
      isObject(b.result) &&
      isObject(b.result.sum) &&
      b.result.sum.a === 124500 &&
      b.result.sum.d === 125250 &&
      b.result.count.b === 250 &&
      b.result.mean_a === 498,
  },
  print: {
    source: PRINT,
    expect: 'ok',
    status: 200,
    verify: (b) =>
      isObject(b.result) &&
      b.result.lines === 101 &&
      typeof b.stdout === 'string' &&
      b.stdout.startsWith('import-time line\nline 0\n') &&
      b.stdout.endsWith('line 99\n'),
  },
  raise: {
    source: RAISE,
    expect: 'script_exception',
    status: 400,
    verify: (b) =>
      typeof b.stdout === 'string' &&
      b.stdout.indexOf('about to fail') >= 0 &&
      typeof b.traceback === 'string' &&
      b.traceback.indexOf('ValueError') >= 0,
  },
  timeout: {
    source: TIMEOUT,
    expect: 'timeout',
    status: 408,
    verify: () => true,
  },
};

export const TYPES = Object.keys(SCRIPTS);
export const SUCCESS_TYPES = TYPES.filter((t) => SCRIPTS[t].expect === 'ok');

// The realistic mix, as a wheel of slots walked by the global iteration
// number: exact proportions, no randomness between runs.
//   hello 40%, numpy 15%, pandas 15%, print 15%, raise 10%, timeout 5%.
// MIX overrides the weights for every script ("hello:8,timeout:1,...", types
// left out get 0); the soak has its own (SOAK_MIX, see soak.js).
export const DEFAULT_MIX = 'hello:8,numpy:3,pandas:3,print:3,raise:2,timeout:1';

export function parseMix(text) {
  const weights = {};
  for (const part of String(text).split(',')) {
    const m = /^\s*([a-z]+)\s*:\s*(\d+)\s*$/.exec(part);
    if (!m || SCRIPTS[m[1]] === undefined) throw new Error(`mix "${text}": "${part}" is not <type>:<weight> (types: ${TYPES.join(' ')})`);
    weights[m[1]] = Number(m[2]);
  }
  if (Object.values(weights).reduce((a, b) => a + b, 0) === 0) throw new Error(`mix "${text}" has no weight`);
  return weights;
}

// The wheel of a mix: each type spread over it, not in one block.
export function mixWheel(text) {
  const weights = parseMix(text);
  const types = Object.keys(weights).filter((t) => weights[t] > 0);
  const total = types.reduce((a, t) => a + weights[t], 0);
  const left = Object.assign({}, weights);
  const credit = {};
  for (const t of types) credit[t] = 0;
  const wheel = [];
  for (let i = 0; i < total; i++) {
    let best = null;
    for (const t of types) {
      credit[t] += weights[t];
      if (left[t] > 0 && (best === null || credit[t] > credit[best])) best = t;
    }
    credit[best] -= total;
    left[best] -= 1;
    wheel.push(best);
  }
  return wheel;
}

export const MIX = __ENV.MIX || DEFAULT_MIX;
const WHEEL = mixWheel(MIX);

export function mixType(iteration, wheel) {
  const w = wheel || WHEEL;
  return w[iteration % w.length];
}

export function mixShare(type, wheel) {
  const w = wheel || WHEEL;
  return w.filter((t) => t === type).length / w.length;
}
