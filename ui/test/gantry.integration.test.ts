// Integration test against the real Gantry core: spawns `$GANTRY_BIN serve`, reads the endpoint line
// it prints, and talks to it with the UI's own client. Skipped unless GANTRY_BIN is set (the project's
// test runner sets it to the built `gantry` binary).
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { isAbsolute, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";
import { WebSocket } from "ws";
import {
  RpcClient,
  RpcError,
  TransportError,
  connectUrl,
  gcodeScript,
  listFleet,
  listPrinters,
  subscribeObjects,
  serverInfo,
  type Endpoint,
  type WebSocketConstructor,
} from "../src/lib/api";
import { rejection } from "./helpers";

const NodeWebSocket = WebSocket as unknown as WebSocketConstructor;
const STARTUP_MS = 60_000;

/** GANTRY_BIN as given, or relative to ui/ or to the repository root. */
function gantryBin(): string {
  const bin = process.env.GANTRY_BIN ?? "";
  if (isAbsolute(bin)) return bin;
  const candidates = [
    resolve(process.cwd(), bin),
    resolve(fileURLToPath(new URL("../..", import.meta.url)), bin),
  ];
  return candidates.find((c) => existsSync(c)) ?? bin;
}

/** Starts `gantry serve` and resolves with the endpoint from its first stdout line. */
function startServe(child: ChildProcess, stderr: () => string): Promise<Endpoint> {
  return new Promise<Endpoint>((resolvePromise, reject) => {
    const timer = setTimeout(() => {
      reject(
        new Error(`gantry serve printed no endpoint in ${STARTUP_MS} ms; stderr:\n${stderr()}`),
      );
    }, STARTUP_MS);
    const fail = (error: Error) => {
      clearTimeout(timer);
      reject(error);
    };
    child.once("error", fail);
    child.once("exit", (code, signal) =>
      fail(
        new Error(
          `gantry serve exited early (code ${code}, signal ${signal}); stderr:\n${stderr()}`,
        ),
      ),
    );
    const lines = createInterface({ input: child.stdout! });
    lines.once("line", (line) => {
      clearTimeout(timer);
      try {
        const ep = JSON.parse(line) as Partial<Endpoint>;
        if (typeof ep.ws_url !== "string" || typeof ep.token !== "string") {
          throw new Error("missing ws_url or token");
        }
        resolvePromise({ ws_url: ep.ws_url, token: ep.token });
      } catch (error) {
        reject(
          new Error(
            `gantry serve's first line is not the endpoint JSON (${String(error)}): ${line}`,
          ),
        );
      }
    });
  });
}

/** The HTTP status of a WebSocket handshake: 101 when it upgrades, else the refusal's status. */
function handshakeStatus(url: string): Promise<number> {
  return new Promise((resolvePromise, reject) => {
    const ws = new WebSocket(url);
    ws.once("open", () => {
      ws.close();
      resolvePromise(101);
    });
    ws.once("unexpected-response", (req, res) => {
      resolvePromise(res.statusCode ?? 0);
      req.destroy();
    });
    ws.once("error", (error) => reject(error));
  });
}

describe.skipIf(!process.env.GANTRY_BIN)("against the real Gantry core (GANTRY_BIN serve)", () => {
  let child: ChildProcess;
  let ep: Endpoint;
  let client: RpcClient;
  let stderrText = "";

  beforeAll(async () => {
    child = spawn(gantryBin(), ["serve"], { stdio: ["ignore", "pipe", "pipe"] });
    child.stderr!.on("data", (chunk: Buffer) => {
      stderrText = (stderrText + chunk.toString()).slice(-8000);
    });
    ep = await startServe(child, () => stderrText);
    client = new RpcClient(connectUrl(ep), NodeWebSocket);
    await client.opened;
  }, STARTUP_MS + 5_000);

  afterAll(async () => {
    client?.close();
    if (child && child.exitCode === null && child.signalCode === null) {
      const exited = new Promise<void>((r) => child.once("exit", () => r()));
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
      await exited;
      clearTimeout(timer);
    }
  });

  it("prints an endpoint as docs/api.md describes", () => {
    expect(ep.ws_url).toMatch(/^ws:\/\/127\.0\.0\.1:\d+\/websocket$/);
    expect(ep.token).toMatch(/^[0-9a-f]{64}$/);
  });

  it("answers server.info", async () => {
    const info = await serverInfo(client);
    expect(typeof info.gantry_version).toBe("string");
    expect(info.api_version).toHaveLength(3);
    expect(info.api_version_string).toBe(info.api_version.join("."));
    expect(typeof info.hostname).toBe("string");
    expect(typeof info.platform).toBe("string");
    expect(info.methods).toEqual(expect.arrayContaining(["server.info", "printers.list"]));
  });

  it("lists the simulated printer, and serial ports in the documented shape", async () => {
    const { printers } = await listPrinters(client);
    const sim = printers.find((p) => p.id === "sim");
    expect(sim).toMatchObject({ id: "sim", kind: "simulated", name: "Gantry simulated printer" });
    for (const p of printers) {
      if (p.kind !== "serial") continue;
      expect(["usb", "pci", "bluetooth", "unknown"]).toContain(p.port_type);
      expect(p.id).toBe(`serial:${p.port}`);
      if (p.usb !== null) {
        expect(p.usb.vid).toMatch(/^[0-9a-f]{4}$/);
        expect(p.usb.pid).toMatch(/^[0-9a-f]{4}$/);
      }
    }
  });

  it("reports an unknown method as a JSON-RPC error", async () => {
    const err = await rejection(client.call("no.such.method"));
    expect(err).toBeInstanceOf(RpcError);
    expect(err).toMatchObject({ code: -32601, message: "Method not found: no.such.method" });
  });

  it("refuses a connection without the token, or with a wrong one", async () => {
    for (const url of [ep.ws_url, connectUrl({ ...ep, token: "0".repeat(64) })]) {
      const bare = new RpcClient(url, NodeWebSocket);
      const err = await rejection(bare.opened);
      expect(err).toBeInstanceOf(TransportError);
      expect(err).toMatchObject({ kind: "connect" });
      expect(await handshakeStatus(url)).toBe(401);
    }
    // The good client is unaffected.
    await expect(serverInfo(client)).resolves.toBeTruthy();
  });

  it("answers 404 on any other path", async () => {
    const other = connectUrl(ep).replace("/websocket?", "/elsewhere?");
    expect(await handshakeStatus(other)).toBe(404);
  });
});

describe.skipIf(!process.env.GANTRY_BIN)(
  "the built-in simulated printer (GANTRY_BIN serve --sim): gantry sim with Gantry as its host",
  () => {
    let child: ChildProcess;
    let client: RpcClient;
    let stderrText = "";
    let dataDir = "";
    const deltas: Record<string, Record<string, unknown>>[] = [];
    const responses: string[] = [];

    beforeAll(async () => {
      const { mkdtempSync } = await import("node:fs");
      const { tmpdir } = await import("node:os");
      dataDir = mkdtempSync(resolve(tmpdir(), "gantry-ui-sim-"));
      child = spawn(gantryBin(), ["serve", "--sim"], {
        stdio: ["ignore", "pipe", "pipe"],
        env: { ...process.env, GANTRY_DATA_DIR: dataDir },
      });
      child.stderr!.on("data", (chunk: Buffer) => {
        stderrText = (stderrText + chunk.toString()).slice(-8000);
      });
      const ep = await startServe(child, () => stderrText);
      client = new RpcClient(connectUrl(ep), NodeWebSocket);
      client.onNotification((method, params) => {
        const p = params as unknown[];
        if (method === "notify_status_update") deltas.push(p[0] as Record<string, Record<string, unknown>>);
        if (method === "notify_gcode_response") responses.push(p[0] as string);
      });
      await client.opened;
    }, STARTUP_MS + 5_000);

    afterAll(async () => {
      client?.close();
      if (child && child.exitCode === null && child.signalCode === null) {
        const exited = new Promise<void>((r) => child.once("exit", () => r()));
        child.kill("SIGTERM");
        const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
        await exited;
        clearTimeout(timer);
      }
      const { rmSync } = await import("node:fs");
      if (dataDir) rmSync(dataDir, { recursive: true, force: true });
    });

    it("serves the sim printer, homes it and reports it live", async () => {
      const { printers } = await listFleet(client);
      expect(printers).toEqual([
        expect.objectContaining({ id: "sim", kind: "local", state: "ready" }),
      ]);
      const { objects } = await client.call<{ objects: string[] }>("printer.objects.list", {
        printer: "sim",
      });
      expect(objects).toEqual(expect.arrayContaining(["toolhead", "extruder", "heater_bed", "print_stats"]));
      const sub = await subscribeObjects(client, "sim", {
        toolhead: ["homed_axes", "position"],
        motion_report: null,
        extruder: null,
      });
      expect(sub.status.toolhead).toMatchObject({ homed_axes: "" });
      expect(typeof sub.status.extruder?.temperature).toBe("number");
      await gcodeScript(client, "sim", "G28\nG1 X40 Y30 Z5 F6000\nM400");
      const query = await client.call<{ status: Record<string, Record<string, unknown>> }>(
        "printer.objects.query",
        { printer: "sim", objects: { toolhead: ["homed_axes", "position"] } },
      );
      expect(query.status.toolhead).toMatchObject({ homed_axes: "xyz", position: [40, 30, 5, 0] });
      // The live position (where the MCU's steppers are, 20 updates a second) reaches the end.
      await vi.waitFor(
        () => {
          const last = deltas
            .map((d) => d.motion_report?.live_position as number[] | undefined)
            .filter((p) => p !== undefined)
            .at(-1);
          expect(last).toBeDefined();
          [40, 30, 5].forEach((v, i) => expect(last![i]).toBeCloseTo(v, 6));
        },
        { timeout: 5_000 },
      );
      const err = await rejection(gcodeScript(client, "sim", "G1 X999"));
      expect(err).toBeInstanceOf(RpcError);
      expect((err as RpcError).message).toContain("Move out of range");
      await vi.waitFor(() => expect(responses.some((r) => r.startsWith("!! Move out of range"))).toBe(true));
    }, 120_000);

    it("shuts down on an emergency stop and comes back with FIRMWARE_RESTART", async () => {
      await client.call("printer.emergency_stop", { printer: "sim" });
      const state = async () =>
        (
          await client.call<{ status: Record<string, Record<string, unknown>> }>(
            "printer.objects.query",
            { printer: "sim", objects: { webhooks: null } },
          )
        ).status.webhooks;
      await vi.waitFor(async () => expect((await state())?.state).toBe("shutdown"), { timeout: 5_000 });
      expect((await state())?.state_message).toBe("Shutdown due to M112 command");
      const err = await rejection(gcodeScript(client, "sim", "G28"));
      expect((err as RpcError).message).toContain("FIRMWARE_RESTART");
      // The sim is reset (its `reset` command), reconnected and configured afresh.
      await gcodeScript(client, "sim", "FIRMWARE_RESTART");
      expect((await state())?.state).toBe("ready");
      await gcodeScript(client, "sim", "G28 X");
      const { printers } = await listFleet(client);
      expect(printers[0]).toMatchObject({ id: "sim", state: "ready" });
    }, 120_000);
  },
);
