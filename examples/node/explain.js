// Explain an image with a compiled nnxplain explainer, from Node.js alone (no Python):
//
//   node explain.js EXPLAINER.onnx IMAGE.png HEATMAP.png [--output NAME] [--neuron K]
//
// The image is converted to the explainer input's channels (1: gray, 3: RGB) and size (nearest
// pixel), scaled to [0, 1] and fed as a batch of one. The heatmap is the explanation summed over
// channels, red where it is positive, blue where negative, white at 0 (scaled by the largest
// |value|), enlarged to about 256 pixels. --output picks the explanation output (default: the last
// output, the last method compiled); --neuron K feeds the `neuron` input of an explainer compiled
// with --neuron-selection index. Everything besides onnxruntime-node is Node's own (zlib for PNG).
"use strict";
const fs = require("node:fs");
const zlib = require("node:zlib");
const ort = require("onnxruntime-node");

// ---------------------------------------------------------------- PNG (8-bit, not interlaced)
const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});
function crc32(buf) {
  let c = 0xffffffff;
  for (const b of buf) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function readPng(file) {
  const data = fs.readFileSync(file);
  if (data.readUInt32BE(0) !== 0x89504e47) throw new Error(`${file}: not a PNG file`);
  let pos = 8, width, height, depth, type, interlace, palette = null;
  const idat = [];
  while (pos < data.length) {
    const length = data.readUInt32BE(pos), kind = data.toString("ascii", pos + 4, pos + 8);
    const body = data.subarray(pos + 8, pos + 8 + length);
    if (kind === "IHDR") {
      [width, height] = [body.readUInt32BE(0), body.readUInt32BE(4)];
      [depth, type, interlace] = [body[8], body[9], body[12]];
    } else if (kind === "PLTE") palette = body;
    else if (kind === "IDAT") idat.push(body);
    else if (kind === "IEND") break;
    pos += 12 + length;
  }
  if (depth !== 8 || interlace !== 0) throw new Error(`${file}: only 8-bit, non-interlaced PNG files are read`);
  const channels = { 0: 1, 2: 3, 3: 1, 4: 2, 6: 4 }[type];
  const raw = zlib.inflateSync(Buffer.concat(idat));
  const stride = width * channels, pixels = Buffer.alloc(height * stride);
  for (let y = 0; y < height; y++) {  // undo the per-row filters
    const filter = raw[y * (stride + 1)], row = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1));
    for (let x = 0; x < stride; x++) {
      const a = x >= channels ? pixels[y * stride + x - channels] : 0;
      const b = y > 0 ? pixels[(y - 1) * stride + x] : 0;
      const c = x >= channels && y > 0 ? pixels[(y - 1) * stride + x - channels] : 0;
      const p = a + b - c, pa = Math.abs(p - a), pb = Math.abs(p - b), pc = Math.abs(p - c);
      const predictor = [0, a, b, (a + b) >> 1, pa <= pb && pa <= pc ? a : pb <= pc ? b : c][filter];
      pixels[y * stride + x] = (row[x] + predictor) & 0xff;
    }
  }
  const rgb = (x, y) => {  // [r, g, b] of pixel (x, y)
    const i = y * stride + x * channels;
    if (type === 3) return [palette[3 * pixels[i]], palette[3 * pixels[i] + 1], palette[3 * pixels[i] + 2]];
    if (channels <= 2) return [pixels[i], pixels[i], pixels[i]];
    return [pixels[i], pixels[i + 1], pixels[i + 2]];
  };
  return { width, height, rgb };
}

function writePng(file, width, height, rgbAt) {
  const raw = Buffer.alloc(height * (3 * width + 1));
  for (let y = 0; y < height; y++)
    for (let x = 0; x < width; x++) rgbAt(x, y).forEach((v, c) => { raw[y * (3 * width + 1) + 1 + 3 * x + c] = v; });
  const chunk = (kind, body) => {
    const head = Buffer.alloc(8);
    head.writeUInt32BE(body.length, 0);
    head.write(kind, 4, "ascii");
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(Buffer.concat([head.subarray(4), body])), 0);
    return Buffer.concat([head, body, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr.set([8, 2, 0, 0, 0], 8);  // 8-bit RGB
  fs.writeFileSync(file, Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk("IHDR", ihdr), chunk("IDAT", zlib.deflateSync(raw)), chunk("IEND", Buffer.alloc(0))]));
}

// ---------------------------------------------------------------- explain
async function main() {
  const args = process.argv.slice(2);
  const option = (name) => { const i = args.indexOf(name); return i < 0 ? undefined : args.splice(i, 2)[1]; };
  const outputName = option("--output"), neuron = option("--neuron");
  if (args.length !== 3) {
    console.error("usage: node explain.js EXPLAINER.onnx IMAGE.png HEATMAP.png [--output NAME] [--neuron K]");
    process.exit(2);
  }
  const [explainerPath, imagePath, heatmapPath] = args;
  const session = await ort.InferenceSession.create(explainerPath);
  const input = session.inputMetadata[0];
  const [, channels, height, width] = input.shape;  // [batch, C, H, W]
  const image = readPng(imagePath);
  const x = new Float32Array(channels * height * width);
  for (let y = 0; y < height; y++)
    for (let i = 0; i < width; i++) {
      const rgb = image.rgb(Math.floor((i * image.width) / width), Math.floor((y * image.height) / height));
      for (let c = 0; c < channels; c++)
        x[(c * height + y) * width + i] = (channels === 1 ? (rgb[0] + rgb[1] + rgb[2]) / 3 : rgb[c]) / 255;
    }
  const feeds = { [input.name]: new ort.Tensor("float32", x, [1, channels, height, width]) };
  if (session.inputNames.includes("neuron")) {
    if (neuron === undefined) throw new Error("this explainer explains a given output: pass --neuron K");
    feeds.neuron = new ort.Tensor("int64", BigInt64Array.from([BigInt(neuron)]), [1]);
  }
  const name = outputName ?? session.outputNames[session.outputNames.length - 1];
  const results = await session.run(feeds);
  if (!(name in results)) throw new Error(`no output '${name}' (outputs: ${session.outputNames.join(", ")})`);
  const scores = results[session.outputNames[0]].data;
  const relevance = results[name].data;

  const map = new Float64Array(height * width);  // summed over channels
  for (let c = 0; c < channels; c++) for (let p = 0; p < height * width; p++) map[p] += relevance[c * height * width + p];
  const top = map.reduce((m, v) => Math.max(m, Math.abs(v)), 0) || 1;
  const scale = Math.max(1, Math.floor(256 / Math.max(height, width)));
  writePng(heatmapPath, width * scale, height * scale, (i, y) => {
    const v = map[Math.floor(y / scale) * width + Math.floor(i / scale)] / top;  // in [-1, 1]
    const fade = Math.round(255 * (1 - Math.abs(v)));
    return v >= 0 ? [255, fade, fade] : [fade, fade, 255];
  });
  const best = scores.indexOf(Math.max(...scores));
  console.log(`${name}: largest score ${scores[best].toFixed(4)} at index ${best}; heatmap ${width * scale}x${height * scale} written to ${heatmapPath}`);
}

main().catch((err) => { console.error(`explain.js: error: ${err.message}`); process.exit(1); });
