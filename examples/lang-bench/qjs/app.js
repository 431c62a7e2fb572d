// echo_qjs: returns its input artifacts unchanged with {"count": n, "bytes": total}:
// the per-language benchmark's stage (quickjs; lang-bench/js is the same code
// for the other engine, only the name differs).
import { defineStage } from "./stagecraft.js";

export const stage = defineStage({
  name: "echo_qjs",
  version: "0.1.0",
  description: "Returns its input artifacts unchanged (benchmark stage, quickjs)",
  params: { type: "object", properties: {}, additionalProperties: false },
  accepts: ["*/*"],
  produces: ["*/*"],
  run(input) {
    const bytes = input.artifacts.reduce((s, a) => s + a.data.length, 0);
    return { artifacts: input.artifacts, metadata: { count: input.artifacts.length, bytes } };
  },
});
