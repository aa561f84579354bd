/**
 * The one WebGPU device of the process, and everything that talks to it directly:
 * the buffer pool, the pipeline cache, the batched command encoder and readback.
 *
 * Kernel calling convention (every kernel in kernels/ follows it):
 *   @binding(0)           var<uniform> u: array<vec4<u32>, 16>;  // 64 u32 words, see uniformWord()
 *   @binding(1..n)        the inputs, `var<storage, read>`
 *   @binding(n+1..)       the outputs, `var<storage, read_write>`
 * Shapes, strides, offsets and scalars travel in `u`, so one compiled pipeline serves every shape;
 * the pipeline cache key holds only static parameters (dtypes, flags, tile sizes).
 */
import { EngineError } from "./errors.ts";

export const UNIFORM_WORDS = 64;
const UNIFORM_SLOT = 256; // bytes; also WebGPU's default minUniformBufferOffsetAlignment
const BATCH_DISPATCHES = 128; // submit after this many dispatches
const WORKGROUP = 256;

export type Binding = GPUBuffer | GPUTextureView;

export interface LaunchSpec {
  /** Kernel family name: shown in errors and in compile statistics. */
  kernel: string;
  /** Static parameters that change the WGSL; with `kernel`, the pipeline cache key. */
  key?: string;
  /** The WGSL source, built only when the key is new. */
  wgsl: () => string;
  inputs: Binding[];
  outputs: GPUBuffer[];
  /** u32 words (use f32Bits() for floats), at most 64. */
  uniforms?: ArrayLike<number>;
  workgroups: [number, number?, number?];
  /** Optional explicit layout for kernels that bind textures. */
  layout?: GPUBindGroupLayout;
}

export interface DeviceInfo {
  adapter: string;
  vendor: string;
  architecture: string;
  isFallbackAdapter: boolean;
  backend: string;
  features: string[];
  limits: Record<string, number>;
}

const f32View = new Float32Array(1);
const u32View = new Uint32Array(f32View.buffer);
/** The bit pattern of an f32, to pass a float through the u32 uniform words. */
export function f32Bits(x: number): number {
  f32View[0] = x;
  return u32View[0];
}

/** WGSL shared by kernels: uniform accessors and the 2-D dispatch linear index. */
export const WGSL_PRELUDE = /* wgsl */ `
@group(0) @binding(0) var<uniform> u: array<vec4<u32>, 16>;
fn uw(i: u32) -> u32 { return u[i / 4u][i % 4u]; }
fn uf(i: u32) -> f32 { return bitcast<f32>(u[i / 4u][i % 4u]); }
fn ui(i: u32) -> i32 { return bitcast<i32>(u[i / 4u][i % 4u]); }
fn linearIndex(gid: vec3<u32>, nwg: vec3<u32>) -> u32 { return gid.x + gid.y * nwg.x * ${WORKGROUP}u; }
`;

/** Workgroup counts for `n` invocations of a 1-D kernel with workgroup size 256, split over x/y
 * when n exceeds the 65,535-workgroup limit of one dimension. */
export function grid1d(n: number, wg = WORKGROUP): [number, number] {
  const groups = Math.max(1, Math.ceil(n / wg));
  if (groups <= 65535) return [groups, 1];
  const y = Math.ceil(groups / 65535);
  return [Math.ceil(groups / y), y];
}
export { WORKGROUP };

// ---------------------------------------------------------------------------------------------
// Buffer pool: buffers bucketed by size (quarter-octave steps, at most 25 % waste); a released
// buffer returns to its bucket only after the work that used it has been submitted, because
// queue.writeBuffer on a recycled buffer would otherwise overtake its earlier, unsubmitted uses.

const USAGE = 0x80 /*STORAGE*/ | 0x4 /*COPY_SRC*/ | 0x8; /*COPY_DST*/

export function bucketSize(bytes: number): number {
  const b = Math.max(256, bytes);
  const step = 2 ** Math.max(8, Math.floor(Math.log2(b)) - 2);
  return Math.ceil(b / step) * step;
}

export class Engine {
  readonly device: GPUDevice;
  readonly info: DeviceInfo;
  readonly f16: boolean;

  // pool
  private free = new Map<number, GPUBuffer[]>();
  private pendingRelease: GPUBuffer[] = [];
  bytesAllocated = 0;
  bytesInUse = 0;
  /** The largest bytesInUse since the last resetPeak(). */
  peakBytesInUse = 0;
  buffersAllocated = 0;

  // pipelines
  private pipelines = new Map<string, GPUComputePipeline>();
  private layouts = new Map<string, GPUBindGroupLayout>();
  compilations = 0;
  dispatches = 0;
  submits = 0;

  // batching
  private encoder: GPUCommandEncoder | null = null;
  private pass: GPUComputePassEncoder | null = null;
  private batchKernels: string[] = [];
  private uniformCpu = new Uint32Array((BATCH_DISPATCHES * UNIFORM_SLOT) / 4);
  private uniformGpu: GPUBuffer | null = null;
  private uniformFree: GPUBuffer[] = [];
  private uniformUsed = 0;
  private error: Error | null = null;

  constructor(device: GPUDevice, info: DeviceInfo) {
    this.device = device;
    this.info = info;
    this.f16 = device.features.has("shader-f16");
    device.addEventListener("uncapturederror", (ev) => {
      const e = (ev as GPUUncapturedErrorEvent).error;
      this.error ??= new EngineError(
        "webgpu",
        `${e.message} (kernels in the failing batch: ${
          [...new Set(this.batchKernels)].join(", ")
        })`,
      );
    });
    device.lost.then((l) => {
      if (l.reason !== "destroyed") {
        this.error ??= new EngineError(
          "webgpu",
          `device lost: ${l.message} (last kernels: ${[...new Set(this.batchKernels)].join(", ")})`,
        );
      }
    });
  }

  /** Throws the first asynchronous device error (validation, out of memory, device lost). */
  check() {
    if (this.error) {
      const e = this.error;
      this.error = null;
      throw e;
    }
  }

  // ----- memory ------------------------------------------------------------------------------
  /** A buffer of at least `bytes` from the pool; `what` names the tensor in the error. */
  alloc(bytes: number, what = "a buffer"): GPUBuffer {
    const limit = this.info.limits.maxStorageBufferBindingSize;
    if (bytes > limit) {
      throw new EngineError(
        "alloc",
        `${what} is ${bytes} bytes, more than this adapter binds at once ` +
          `(maxStorageBufferBindingSize ${limit}); use a smaller batch or fewer classes per pass`,
      );
    }
    const size = Math.min(bucketSize(bytes), Math.floor(limit / 256) * 256);
    this.bytesInUse += size;
    if (this.bytesInUse > this.peakBytesInUse) this.peakBytesInUse = this.bytesInUse;
    const list = this.free.get(size);
    if (list && list.length) return list.pop()!;
    this.bytesAllocated += size;
    this.buffersAllocated++;
    return this.device.createBuffer({ size, usage: USAGE });
  }

  resetPeak() {
    this.peakBytesInUse = this.bytesInUse;
  }

  /** Returns a buffer to the pool once the work recorded so far is submitted. */
  release(buf: GPUBuffer) {
    this.bytesInUse -= buf.size;
    if (this.encoder) this.pendingRelease.push(buf);
    else this.toFree(buf);
  }

  private toFree(buf: GPUBuffer) {
    let list = this.free.get(buf.size);
    if (!list) this.free.set(buf.size, list = []);
    list.push(buf);
  }

  /** Bytes the pool may keep in unused buffers; `trimTo` gives back what lies above it. */
  poolBudget = 1 << 30;

  /** Bytes held in pooled (unused) buffers. */
  get bytesPooled(): number {
    return this.bytesAllocated - this.bytesInUse;
  }

  /**
   * Destroys pooled buffers, largest first, until at most `budget` bytes stay pooled. The scopes
   * call it with `poolBudget` whenever an outermost scope closes (between steps, after a heavy
   * phase), so a pass over many shapes does not keep every size it once needed.
   */
  trimTo(budget = this.poolBudget) {
    if (this.bytesPooled <= budget) return;
    this.flush();
    const sizes = [...this.free.keys()].sort((a, b) => b - a);
    for (const size of sizes) {
      const list = this.free.get(size)!;
      while (list.length && this.bytesPooled > budget) {
        const b = list.pop()!;
        this.bytesAllocated -= b.size;
        this.buffersAllocated--;
        b.destroy();
      }
      if (!list.length) this.free.delete(size);
      if (this.bytesPooled <= budget) break;
    }
  }

  /** Destroys every pooled (unused) buffer. */
  trim() {
    this.trimTo(0);
  }

  write(buf: GPUBuffer, offsetBytes: number, data: ArrayBufferView) {
    this.device.queue.writeBuffer(
      buf,
      offsetBytes,
      data.buffer as ArrayBuffer,
      data.byteOffset,
      data.byteLength,
    );
  }

  // ----- pipelines ---------------------------------------------------------------------------
  bufferLayout(nIn: number, nOut: number): GPUBindGroupLayout {
    const k = `${nIn}:${nOut}`;
    let l = this.layouts.get(k);
    if (!l) {
      const entries: GPUBindGroupLayoutEntry[] = [{
        binding: 0,
        visibility: GPUShaderStage.COMPUTE,
        buffer: { type: "uniform" },
      }];
      for (let i = 0; i < nIn; i++) {
        entries.push({
          binding: 1 + i,
          visibility: GPUShaderStage.COMPUTE,
          buffer: { type: "read-only-storage" },
        });
      }
      for (let i = 0; i < nOut; i++) {
        entries.push({
          binding: 1 + nIn + i,
          visibility: GPUShaderStage.COMPUTE,
          buffer: { type: "storage" },
        });
      }
      l = this.device.createBindGroupLayout({ entries });
      this.layouts.set(k, l);
    }
    return l;
  }

  pipeline(kernel: string, key: string, wgsl: () => string, layout: GPUBindGroupLayout) {
    const k = `${kernel}|${key}`;
    let p = this.pipelines.get(k);
    if (p) return p;
    const code = (this.f16 ? "enable f16;\n" : "") + wgsl();
    this.device.pushErrorScope("validation");
    const module = this.device.createShaderModule({ label: kernel, code });
    p = this.device.createComputePipeline({
      label: k,
      layout: this.device.createPipelineLayout({ bindGroupLayouts: [layout] }),
      compute: { module, entryPoint: "main" },
    });
    this.device.popErrorScope().then((err) => {
      if (err) this.error ??= new EngineError(kernel, `shader compile failed: ${err.message}`);
    });
    this.compilations++;
    this.pipelines.set(k, p);
    return p;
  }

  // ----- dispatch ----------------------------------------------------------------------------
  launch(spec: LaunchSpec) {
    this.check();
    const layout = spec.layout ?? this.bufferLayout(spec.inputs.length, spec.outputs.length);
    const pipe = this.pipeline(spec.kernel, spec.key ?? "", spec.wgsl, layout);
    if (!this.encoder) this.encoder = this.device.createCommandEncoder();
    if (!this.uniformGpu) {
      this.uniformGpu = this.uniformFree.pop() ?? this.device.createBuffer({
        size: this.uniformCpu.byteLength,
        usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
      });
    }
    const slot = this.uniformUsed++;
    const base = (slot * UNIFORM_SLOT) / 4;
    const uw = spec.uniforms ?? [];
    if (uw.length > UNIFORM_WORDS) {
      throw new EngineError(spec.kernel, `${uw.length} uniform words exceed ${UNIFORM_WORDS}`);
    }
    for (let i = 0; i < uw.length; i++) this.uniformCpu[base + i] = uw[i];
    const entries: GPUBindGroupEntry[] = [{
      binding: 0,
      resource: { buffer: this.uniformGpu, offset: slot * UNIFORM_SLOT, size: UNIFORM_SLOT },
    }];
    let b = 1;
    for (const x of spec.inputs) {
      entries.push({ binding: b++, resource: x instanceof GPUBuffer ? { buffer: x } : x });
    }
    for (const x of spec.outputs) entries.push({ binding: b++, resource: { buffer: x } });
    const group = this.device.createBindGroup({ layout, entries });
    if (!this.pass) this.pass = this.encoder.beginComputePass();
    this.pass.setPipeline(pipe);
    this.pass.setBindGroup(0, group);
    const [x, y = 1, z = 1] = spec.workgroups;
    this.pass.dispatchWorkgroups(x, y, z);
    this.batchKernels.push(spec.kernel);
    this.dispatches++;
    if (this.uniformUsed >= BATCH_DISPATCHES) this.flush();
  }

  /** Records a buffer-to-buffer copy into the current batch. */
  copy(src: GPUBuffer, srcOffset: number, dst: GPUBuffer, dstOffset: number, bytes: number) {
    this.check();
    if (!this.encoder) this.encoder = this.device.createCommandEncoder();
    if (this.pass) {
      this.pass.end();
      this.pass = null;
    }
    this.encoder.copyBufferToBuffer(src, srcOffset, dst, dstOffset, bytes);
  }

  /** The current encoder (ending any open compute pass), for copies other code records. */
  commandEncoder(): GPUCommandEncoder {
    if (!this.encoder) this.encoder = this.device.createCommandEncoder();
    if (this.pass) {
      this.pass.end();
      this.pass = null;
    }
    return this.encoder;
  }

  /** Submits everything recorded so far. */
  flush() {
    if (!this.encoder) return;
    if (this.pass) this.pass.end();
    const uni = this.uniformGpu;
    if (uni && this.uniformUsed) {
      this.device.queue.writeBuffer(
        uni,
        0,
        this.uniformCpu.buffer,
        0,
        this.uniformUsed * UNIFORM_SLOT,
      );
    }
    this.device.queue.submit([this.encoder.finish()]);
    this.submits++;
    this.encoder = null;
    this.pass = null;
    this.uniformUsed = 0;
    this.uniformGpu = null;
    if (uni) this.uniformFree.push(uni);
    for (const b of this.pendingRelease) this.toFree(b);
    this.pendingRelease = [];
    this.batchKernels = [];
  }

  /** Copies `bytes` from `buf` back to the host (flushes first). */
  async read(buf: GPUBuffer, offsetBytes: number, bytes: number): Promise<ArrayBuffer> {
    const size = Math.ceil(bytes / 4) * 4;
    const staging = this.device.createBuffer({
      size: Math.max(4, size),
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    this.commandEncoder().copyBufferToBuffer(buf, offsetBytes, staging, 0, size);
    this.flush();
    try {
      await staging.mapAsync(GPUMapMode.READ);
    } catch (e) {
      this.check();
      throw e;
    }
    this.check();
    const out = staging.getMappedRange().slice(0, bytes);
    staging.unmap();
    staging.destroy();
    return out;
  }

  /** Waits until the GPU has finished everything submitted. */
  async sync() {
    this.flush();
    await this.device.queue.onSubmittedWorkDone();
    this.check();
  }
}

let engine: Engine | null = null;
let pending: Promise<Engine> | null = null;

const NO_ADAPTER = `no WebGPU adapter found.
  With a GPU: install its Vulkan driver (NVIDIA: the proprietary driver; AMD/Intel: mesa-vulkan-drivers) and the loader (libvulkan1).
  Without a GPU: install Mesa's software Vulkan driver (Debian/Ubuntu: apt-get install mesa-vulkan-drivers)
  and run with DENO_WEBGPU_BACKEND=vulkan.`;

/**
 * Mesa's Vulkan drivers print "XDG_RUNTIME_DIR is invalid or not set" when the variable is unset
 * (a headless shell, CI, a container). Point it at a private 0700 folder of this process's, removed
 * when the process ends, before the driver is loaded.
 */
function ensureRuntimeDir() {
  try {
    const cur = Deno.env.get("XDG_RUNTIME_DIR");
    if (cur && Deno.statSync(cur).isDirectory) return;
    const dir = Deno.makeTempDirSync({ prefix: "clipkit-runtime-" });
    Deno.chmodSync(dir, 0o700);
    Deno.env.set("XDG_RUNTIME_DIR", dir);
    globalThis.addEventListener("unload", () => {
      try {
        Deno.removeSync(dir, { recursive: true });
      } catch { /* already gone */ }
    });
  } catch {
    // without env or write permission the driver only prints its warning
  }
}

function envOr(name: string, fallback: string): string {
  try {
    return Deno.env.get(name) ?? fallback;
  } catch {
    return fallback;
  }
}

/** The largest tensor, in bytes, one kernel binding may hold on this adapter. */
export function bindingLimit(): number {
  return E().info.limits.maxStorageBufferBindingSize;
}

/** Initialises the process's one device with the adapter's real limits and useful features. */
export function initEngine(): Promise<Engine> {
  if (engine) return Promise.resolve(engine);
  pending ??= (async () => {
    if (!("gpu" in navigator)) throw new EngineError("device", NO_ADAPTER);
    ensureRuntimeDir();
    const adapter = await navigator.gpu.requestAdapter({ powerPreference: "high-performance" });
    if (!adapter) throw new EngineError("device", NO_ADAPTER);
    const wanted: GPUFeatureName[] = [
      "shader-f16",
      "timestamp-query",
      "subgroups" as GPUFeatureName,
    ];
    const requiredFeatures = wanted.filter((f) => adapter.features.has(f));
    const l = adapter.limits;
    const requiredLimits: Record<string, number> = {
      maxBufferSize: l.maxBufferSize,
      maxStorageBufferBindingSize: l.maxStorageBufferBindingSize,
      maxComputeWorkgroupStorageSize: l.maxComputeWorkgroupStorageSize,
      maxComputeInvocationsPerWorkgroup: l.maxComputeInvocationsPerWorkgroup,
      maxComputeWorkgroupSizeX: l.maxComputeWorkgroupSizeX,
      maxComputeWorkgroupSizeY: l.maxComputeWorkgroupSizeY,
      maxStorageBuffersPerShaderStage: l.maxStorageBuffersPerShaderStage,
      maxComputeWorkgroupsPerDimension: l.maxComputeWorkgroupsPerDimension,
      maxTextureDimension2D: l.maxTextureDimension2D,
      maxTextureArrayLayers: l.maxTextureArrayLayers,
    };
    const device = await adapter.requestDevice({ requiredFeatures, requiredLimits });
    const limits: Record<string, number> = {};
    for (const k of Object.keys(requiredLimits)) {
      limits[k] = (device.limits as unknown as Record<string, number>)[k];
    }
    // CLIPKIT_MAX_BINDING=BYTES acts as an adapter with a smaller largest binding (tests, and
    // checking that a job fits a smaller GPU's limit before moving it there)
    const cap = Number(envOr("CLIPKIT_MAX_BINDING", ""));
    if (cap > 0 && cap < limits.maxStorageBufferBindingSize) {
      limits.maxStorageBufferBindingSize = Math.floor(cap / 256) * 256;
    }
    const ai = adapter.info;
    engine = new Engine(device, {
      adapter: ai.description || ai.device || "unknown",
      vendor: ai.vendor,
      architecture: ai.architecture,
      isFallbackAdapter: !!(ai as unknown as { isFallbackAdapter?: boolean }).isFallbackAdapter,
      backend: Deno.env.get("DENO_WEBGPU_BACKEND") ?? "default",
      features: [...device.features],
      limits,
    });
    return engine;
  })();
  return pending;
}

/** The initialised engine; throws if `initEngine()` has not completed. */
export function E(): Engine {
  if (!engine) {
    throw new EngineError("device", "the engine is not initialised: await initEngine() first");
  }
  return engine;
}
