// Runs explainers with onnxruntime-node or onnxruntime-web (its WASM backend) from plain Node.js:
//
//   node run_node.mjs RUNTIME NODE_MODULES_DIR MANIFEST.json OUT_DIR
//
// RUNTIME is "onnxruntime-node" or "onnxruntime-web". MANIFEST lists the cases:
//   {"cases": [{"id": "...", "model": "path.onnx", "inputs": [{"name", "file", "dtype", "shape"}]}]}
// with each input as raw little-endian data. For every case the outputs are written to
// OUT_DIR/<id>.<k>.bin and described in OUT_DIR/<id>.json ({"outputs": [{name, dtype, shape, file}]},
// or {"error": "one line"}); OUT_DIR/<id>.started is written first, so that a crash names its case.
import { createRequire } from "node:module";
import fs from "node:fs";
import path from "node:path";

const [runtime, modulesDir, manifestPath, outDir] = process.argv.slice(2);
const require = createRequire(path.join(path.resolve(modulesDir), "noop.js"));
const ort = require(runtime);
const options = {};
if (runtime === "onnxruntime-web") {
  ort.env.wasm.numThreads = 1;  // no worker threads: the same arithmetic on any machine
  options.executionProviders = ["wasm"];
} else {
  options.executionProviders = ["cpu"];
  options.intraOpNumThreads = 2;
}

const ARRAYS = { float32: Float32Array, int64: BigInt64Array, int32: Int32Array };

function read(input) {
  const bytes = fs.readFileSync(input.file);
  const Type = ARRAYS[input.dtype];
  const data = new Type(bytes.buffer, bytes.byteOffset, bytes.byteLength / Type.BYTES_PER_ELEMENT);
  return new ort.Tensor(input.dtype, data.slice(), input.shape);
}

const manifest = JSON.parse(fs.readFileSync(manifestPath, "utf8"));
fs.mkdirSync(outDir, { recursive: true });
for (const c of manifest.cases) {
  const done = path.join(outDir, `${c.id}.json`);
  if (fs.existsSync(done)) continue;  // a rerun after a crash goes on with the next case
  fs.writeFileSync(path.join(outDir, `${c.id}.started`), "");
  let result;
  try {
    const session = await ort.InferenceSession.create(fs.readFileSync(c.model), options);
    const feeds = {};
    for (const input of c.inputs) feeds[input.name] = read(input);
    const outputs = await session.run(feeds);
    result = { outputs: [] };
    session.outputNames.forEach((name, k) => {
      const t = outputs[name];
      const file = path.join(outDir, `${c.id}.${k}.bin`);
      fs.writeFileSync(file, Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength));
      result.outputs.push({ name, dtype: t.type, shape: t.dims, file });
    });
    await session.release();
  } catch (err) {
    result = { error: String(err && err.message ? err.message : err).split("\n")[0].slice(0, 300) };
  }
  fs.writeFileSync(done, JSON.stringify(result));
}
