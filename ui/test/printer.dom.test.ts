// The live printer pages (jsdom) against a fake core: the dashboard shows what the printer's status
// objects say — and only that — follows notify_status_update deltas, sets heater targets through
// G-code, and the console echoes commands and shows responses and errors.
import { describe, expect, it, vi } from "vitest";
import { fireEvent, render, screen } from "@testing-library/svelte";
import Dashboard from "../src/pages/Dashboard.svelte";
import Console from "../src/pages/Console.svelte";
import { Connection } from "../src/lib/connection.svelte";
import { PrinterStore } from "../src/lib/printer.svelte";
import { RpcError } from "../src/lib/api";

type Listener = (method: string, params: unknown) => void;

function fakeCore(fleet: unknown[], status: Record<string, Record<string, unknown>>) {
  let listener: Listener | null = null;
  const calls: { method: string; params: unknown }[] = [];
  const client = {
    call: vi.fn(async (method: string, params?: unknown) => {
      calls.push({ method, params });
      switch (method) {
        case "printers.fleet":
          return { printers: fleet };
        case "printer.objects.list":
          return { objects: Object.keys(status) };
        case "printer.objects.subscribe":
          return { eventtime: 1, status };
        case "server.temperature_store":
          return { extruder: { temperatures: [25, 100, 180], targets: [200, 200, 200], powers: [1, 1, 0.5] } };
        case "printer.gcode.script": {
          const script = (params as { script: string }).script;
          if (script === "G1 X900") throw new RpcError(400, "the printer refused: Move out of range: 900.000 0.000 0.000 [0.000]");
          listener?.("notify_gcode_response", [`// ran ${script}`, "sim"]);
          return "ok";
        }
        default:
          throw new RpcError(-32601, `Method not found: ${method}`);
      }
    }) as never,
    closed: new Promise<{ code: number; reason: string }>(() => {}),
    close: vi.fn(),
    onNotification: (l: Listener) => {
      listener = l;
      return () => {};
    },
  };
  const connection = new Connection(async () => client);
  const store = new PrinterStore(connection);
  return { connection, store, calls, emit: (m: string, p: unknown) => listener?.(m, p) };
}

const SIM = { id: "sim", name: "Gantry simulated printer", address: "gantry sim", kind: "local", state: "ready", state_message: "Printer is ready" };

describe("Dashboard", () => {
  it("says when no printer is connected, without made-up data", async () => {
    const { connection, store } = fakeCore([], {});
    await store.refresh();
    render(Dashboard, { store, source: connection });
    expect(await screen.findByText("No printer connected")).toBeTruthy();
    expect(screen.queryByText(/°C/)).toBeNull();
  });

  it("shows the printer's objects and follows their deltas", async () => {
    const { connection, store, emit, calls } = fakeCore([SIM], {
      webhooks: { state: "ready", state_message: "Printer is ready" },
      extruder: { temperature: 201.26, target: 200, power: 0.41 },
      heater_bed: { temperature: 59.9, target: 60, power: 0.2 },
      print_stats: { state: "printing", filename: "cube.gcode", print_duration: 600, filament_used: 1500 },
      virtual_sdcard: { progress: 0.25 },
      motion_report: { live_position: [10.5, 20.25, 0.3, 5], live_velocity: 50 },
      toolhead: { homed_axes: "xyz" },
    });
    await store.refresh();
    render(Dashboard, { store, source: connection });
    expect((await screen.findByTestId("temp-extruder")).textContent).toBe("201.3 °C");
    expect(screen.getByTestId("temp-heater_bed").textContent).toBe("59.9 °C");
    expect(screen.getByText("cube.gcode")).toBeTruthy();
    expect(screen.getByTestId("progress").textContent).toBe("25.0 %");
    // 10 min printing at 25 %: 30 min left.
    expect(screen.getByText("30:00")).toBeTruthy();
    expect(screen.getByTestId("pos-x").textContent).toBe("10.50");
    expect(screen.getByTestId("klippy-state").textContent).toBe("Ready");
    emit("notify_status_update", [{ extruder: { temperature: 215 }, motion_report: { live_position: [11, 20.25, 0.3, 5] } }, 2, "sim"]);
    await vi.waitFor(() => expect(screen.getByTestId("temp-extruder").textContent).toBe("215.0 °C"));
    expect(screen.getByTestId("pos-x").textContent).toBe("11.00");
    // Deltas of another printer change nothing here.
    emit("notify_status_update", [{ extruder: { temperature: 20 } }, 3, "voron"]);
    expect(screen.getByTestId("temp-extruder").textContent).toBe("215.0 °C");
    // A target goes out as Klipper's G-code.
    await fireEvent.input(screen.getByTestId("target-heater_bed"), { target: { value: "65" } });
    await fireEvent.submit(screen.getByTestId("target-heater_bed").closest("form")!);
    await vi.waitFor(() =>
      expect(calls.some((c) => c.method === "printer.gcode.script" && (c.params as { script: string }).script === "SET_HEATER_TEMPERATURE HEATER=heater_bed TARGET=65")).toBe(true),
    );
    // Shut down: the state says so, with Klipper's message.
    emit("notify_status_update", [{ webhooks: { state: "shutdown", state_message: "MCU 'mcu' shutdown: Timer too close" } }, 4, "sim"]);
    await screen.findByText("MCU 'mcu' shutdown: Timer too close");
    expect(screen.getByTestId("klippy-state").textContent).toBe("Shut down");
  });
});

describe("Console", () => {
  it("echoes commands, shows responses and errors", async () => {
    const { connection, store } = fakeCore([SIM], { webhooks: { state: "ready" } });
    await store.refresh();
    render(Console, { store });
    const input = screen.getByTestId("console-input");
    await fireEvent.input(input, { target: { value: "G28" } });
    await fireEvent.submit(input.closest("form")!);
    await screen.findByText("> G28");
    await screen.findByText("// ran G28");
    await fireEvent.input(input, { target: { value: "G1 X900" } });
    await fireEvent.submit(input.closest("form")!);
    await screen.findByText(/!! the printer refused: Move out of range/);
    expect(connection.state.status).toBe("connected");
  });
});
