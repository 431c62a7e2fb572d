// {{name}}: turns PNG images gray (optionally inverted). Edit freely: the SDK
// (./stagecraft.js, copied in at build time) validates params against the
// schema below and turns any exception into a stage error with its message.
import { defineStage, png, stem, progress } from "./stagecraft.js";

export const stage = defineStage({
  name: "{{name}}",
  version: "0.1.0",
  description: "Converts PNG images to grayscale",
  params: {
    type: "object",
    properties: {
      invert: { type: "boolean", default: false, description: "Invert the gray levels" },
    },
    additionalProperties: false,
  },
  accepts: ["image/png"],
  produces: ["image/png"],
  run(input) {
    input.first("image/png"); // invalid-input when there is no PNG
    const pngs = input.all("image/png");
    const artifacts = pngs.map((a, i) => {
      progress(i / pngs.length, a.name);
      const img = png.decode(a); // corrupt bytes are invalid-input naming the artifact
      const gray = new Uint8Array(img.width * img.height);
      for (let p = 0; p < gray.length; p++) {
        const v = Math.round(0.299 * img.data[4 * p] + 0.587 * img.data[4 * p + 1] + 0.114 * img.data[4 * p + 2]);
        gray[p] = input.params.invert ? 255 - v : v;
      }
      return { name: `${stem(a.name)}_gray.png`, mediaType: "image/png", data: png.encode({ width: img.width, height: img.height, data: gray, channels: 1 }) };
    });
    progress(1, "done");
    return { artifacts, metadata: { count: artifacts.length } };
  },
});
