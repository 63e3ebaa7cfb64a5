// Component tests of the Printers page and the Dashboard's camera (jsdom) against a fake core that
// keeps a fleet and answers the printers.* methods as docs/api.md says: the fleet with live link
// state and problems, adding by address (credentials, core's errors), driving a board with its
// printer.cfg (core's errors, the USB row's `serial:` hint), printers found on the network with
// Add, USB boards, choosing the printer the Dashboard shows, and removing one.
import { beforeEach, describe, expect, it, vi } from "vitest";
import { fireEvent, render, screen, waitFor, within } from "@testing-library/svelte";
import Printers from "../src/pages/Printers.svelte";
import Dashboard from "../src/pages/Dashboard.svelte";
import { Connection } from "../src/lib/connection.svelte";
import { PrinterStore } from "../src/lib/printer.svelte";
import {
  RpcError,
  type DiscoveredPrinter,
  type FleetPrinter,
  type MdnsState,
  type SerialPrinter,
  type Webcam,
} from "../src/lib/api";

type Listener = (method: string, params: unknown) => void;

const SIM: FleetPrinter = {
  id: "sim",
  name: "Gantry simulated printer",
  address: "gantry sim (tcp 127.0.0.1:40123)",
  kind: "local",
  state: "ready",
  state_message: "Printer is ready",
  link: null,
  problem: null,
};

const OCTO_ID = "octoprint:10.0.0.5:80";

function octo(over: Partial<FleetPrinter> = {}): FleetPrinter {
  return {
    id: OCTO_ID,
    name: "OctoPrint at 10.0.0.5:80",
    address: "http://10.0.0.5/",
    kind: "octoprint",
    state: "ready",
    state_message: "Operational",
    link: { state: "connected" },
    problem: null,
    ...over,
  };
}

const KLIPPER_BOARD: SerialPrinter = {
  id: "serial:/dev/ttyACM0",
  name: "Klipper (stm32f446xx)",
  kind: "serial",
  port: "/dev/ttyACM0",
  port_type: "usb",
  usb: {
    vid: "1d50",
    pid: "614e",
    manufacturer: "Klipper",
    product: "stm32f446xx",
    serial_number: "3A0028000851363131363530",
  },
  board: "Klipper firmware (USB)",
};

const VORON: DiscoveredPrinter = {
  id: "uuid:6388c43a",
  kind: "moonraker",
  name: "Moonraker-6388c43a @ voron",
  host: "voron.local.",
  addresses: ["10.0.0.9"],
  port: 7125,
  url: "http://10.0.0.9:7125/",
  uuid: "6388c43a",
  version: "v0.11.0",
  txt: {},
  services: ["_moonraker._tcp.local."],
  backend: "moonraker",
  added: null,
};

/** What core answers for a board it drives with `config`: `printer.cfg on PORT`, kind local. */
function board(config: string, name?: string): FleetPrinter {
  return {
    id: `klipper:${config}`,
    name: name ?? "printer.cfg on /dev/ttyACM0",
    address: "/dev/ttyACM0",
    kind: "local",
    state: "ready",
    state_message: "Printer is ready",
    link: { state: "connected" },
    problem: null,
  };
}

interface Core {
  fleet: FleetPrinter[];
  /** While set, `printers.add` with `config` waits for it (the boards are connecting). */
  boardsConnecting: Promise<void> | null;
  network: DiscoveredPrinter[];
  usb: SerialPrinter[];
  mdns: MdnsState;
  webcams: Record<string, Webcam[]>;
  calls: { method: string; params: Record<string, unknown> }[];
  emit: (method: string, params: unknown) => void;
  store: PrinterStore;
  connection: Connection;
}

/** A fake core: a fleet, the printers.* methods, and the printer methods the store calls. */
function fakeCore(init: Partial<Pick<Core, "fleet" | "network" | "usb" | "mdns" | "webcams">> = {}): Core {
  let listener: Listener | null = null;
  const core = {
    fleet: init.fleet ?? [SIM],
    network: init.network ?? [],
    usb: init.usb ?? [],
    mdns: init.mdns ?? ({ state: "browsing", interfaces: "every interface" } as MdnsState),
    webcams: init.webcams ?? {},
    calls: [] as Core["calls"],
    boardsConnecting: null,
  } as Core;
  const discovered = () => ({ mdns: core.mdns, network: core.network, usb: core.usb });
  const client = {
    call: vi.fn(async (method: string, params?: Record<string, unknown>) => {
      const p = params ?? {};
      core.calls.push({ method, params: p });
      switch (method) {
        case "printers.fleet":
          return { printers: core.fleet };
        case "printers.subscribe":
          return { ...discovered(), fleet: core.fleet };
        case "printers.discovered":
          return discovered();
        case "printers.add": {
          if (p.config !== undefined) {
            const config = String(p.config);
            if (!config.startsWith("/")) {
              throw new RpcError(-32602, `printers.add: give the printer.cfg by its full path, not '${config}'`);
            }
            if (config.includes("typo")) {
              throw new RpcError(-32602, `${config}:12: [stepper_x] option 'rotation_distanse' is not valid in section 'stepper_x'`);
            }
            if (config.includes("unplugged")) {
              throw new RpcError(503, `Could not start the printer of ${config}: MCU 'mcu': cannot open /dev/ttyACM0: No such file or directory. Check that the board is plugged in, runs Klipper's firmware, and that no other program (Klipper, a slicer, a terminal) has its port open.`);
            }
            await core.boardsConnecting;
            const entry = board(config, p.name as string | undefined);
            core.fleet = [...core.fleet, entry];
            return { printer: entry };
          }
          const url = String(p.url);
          if (url.includes("nothing")) {
            throw new RpcError(503, `Nothing answers at ${url}: connection refused. Check the address and port, and that the printer's server is running.`);
          }
          if (p.api_key === undefined) {
            throw new RpcError(401, `OctoPrint answered at ${url} and needs an API key. In OctoPrint, open Settings › Application Keys and generate a key for Gantry.`);
          }
          if (p.api_key !== "GOODKEY") {
            throw new RpcError(401, `OctoPrint answered at ${url}, but refused the API key. Check the key.`);
          }
          const entry = octo({ name: (p.name as string | undefined) ?? "OctoPrint at 10.0.0.5:80" });
          core.fleet = [...core.fleet, entry];
          return { printer: entry, probe: { kind: "octoprint", version: "OctoPrint 1.11.8", message: "OctoPrint 1.11.8 answered" } };
        }
        case "printers.remove":
          core.fleet = core.fleet.filter((f) => f.id !== p.id);
          return { removed: p.id };
        case "printers.rename": {
          const name = String(p.name).trim();
          if (name.length > 80) {
            throw new RpcError(-32602, `printers.rename: the name has ${name.length} characters; at most 80 fit`);
          }
          core.fleet = core.fleet.map((f) => (f.id === p.id ? { ...f, name } : f));
          const printer = core.fleet.find((f) => f.id === p.id);
          return { printer, saved: p.id !== "sim" };
        }
        case "printer.objects.list":
          return { objects: ["webhooks", "extruder"] };
        case "printer.objects.subscribe":
          // OctoPrint reports no heater power and no toolhead position; Gantry's own printer does.
          return p.printer === "sim"
            ? { eventtime: 1, status: { webhooks: { state: "ready" }, extruder: { temperature: 21, target: 0, power: 0.25 }, motion_report: { live_position: [1, 2, 3, 0] } } }
            : { eventtime: 1, status: { webhooks: { state: "ready" }, extruder: { temperature: 21, target: 0 } } };
        case "server.temperature_store":
          return {};
        case "server.webcams.list":
          return { webcams: core.webcams[String(p.printer)] ?? [] };
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
  core.connection = new Connection(async () => client);
  core.store = new PrinterStore(core.connection);
  core.emit = (m, p) => listener?.(m, p);
  return core;
}

async function renderPrinters(core: Core) {
  await core.store.refresh();
  render(Printers, { store: core.store });
  await screen.findByTestId("printer-sim");
}

beforeEach(() => {
  history.replaceState(null, "", "/#/printers");
});

describe("Printers page: the fleet", () => {
  it("shows each printer's state, link, and when something is wrong the cause and what to do", async () => {
    const core = fakeCore({
      fleet: [
        SIM,
        octo({
          link: { state: "reconnecting", reason: "cannot reach http://10.0.0.5/: connection refused", retry_in_ms: 4000 },
          problem: {
            cause: "Gantry lost the connection: cannot reach http://10.0.0.5/: connection refused",
            advice: "Gantry tries again by itself (next try in 4 s). Check that OctoPrint is running at http://10.0.0.5/ and that this computer can reach it.",
          },
        }),
      ],
    });
    await renderPrinters(core);
    const sim = within(screen.getByTestId("printer-sim"));
    expect(sim.getByText("Gantry simulated printer")).toBeTruthy();
    expect(sim.getByTestId("fleet-state").textContent).toBe("Klipper: Ready");
    expect(sim.queryByTestId("fleet-link")).toBeNull();
    expect(sim.queryByTestId("fleet-remove")).toBeNull();
    expect(sim.getByTestId("selected-badge").textContent).toBe("Shown on Dashboard");

    const card = within(screen.getByTestId("printer-octoprint-10-0-0-5-80"));
    expect(card.getByText("OctoPrint")).toBeTruthy();
    expect(card.getByTestId("fleet-link").textContent).toBe("Reconnecting…");
    // Its last state is not passed off as the current one.
    expect(card.getByTestId("fleet-state").textContent).toBe("Printer: Ready (last seen)");
    const problem = card.getByTestId("fleet-problem").textContent ?? "";
    expect(problem).toContain("connection refused");
    expect(problem).toContain("Check that OctoPrint is running at http://10.0.0.5/");

    // The link comes back: core says the fleet changed, the page shows it.
    core.fleet = [SIM, octo()];
    core.emit("notify_printers_changed", [{ source: "fleet", action: "link", id: OCTO_ID }]);
    await waitFor(() => expect(card.getByTestId("fleet-link").textContent).toBe("Connected"));
    expect(card.getByTestId("fleet-state").textContent).toBe("Printer: Ready");
    expect(card.queryByTestId("fleet-problem")).toBeNull();
    expect(core.calls.filter((c) => c.method === "printers.subscribe")).toHaveLength(1);
  });

  it("shows a saved printer not reached since Gantry started without a state of its own", async () => {
    const core = fakeCore({
      fleet: [
        SIM,
        octo({
          state: null,
          state_message: null,
          link: { state: "connecting", reason: "Cannot reach http://10.0.0.5/: no route to host", retry_in_ms: 8000 },
          problem: {
            cause: "Not connected since Gantry started: Cannot reach http://10.0.0.5/: no route to host",
            advice: "Gantry keeps trying (next try in 8 s). Check that OctoPrint is running at http://10.0.0.5/ and that this computer can reach it; or remove the printer if it is gone.",
          },
        }),
      ],
    });
    await renderPrinters(core);
    const card = within(screen.getByTestId("printer-octoprint-10-0-0-5-80"));
    expect(card.getByTestId("fleet-link").textContent).toBe("Not connected yet");
    expect(card.getByTestId("fleet-state").textContent).toBe("Printer: not seen yet");
    const problem = card.getByTestId("fleet-problem").textContent ?? "";
    expect(problem).toContain("Not connected since Gantry started");
    expect(problem).toContain("or remove the printer if it is gone");
    expect(card.getByTestId("fleet-remove")).toBeTruthy();
  });

  it("makes a printer the one the Dashboard shows, and opens it", async () => {
    const core = fakeCore({ fleet: [SIM, octo()] });
    await renderPrinters(core);
    const card = within(screen.getByTestId("printer-octoprint-10-0-0-5-80"));
    await fireEvent.click(card.getByTestId("fleet-select"));
    await waitFor(() => expect(core.store.selected).toBe(OCTO_ID));
    expect(
      core.calls.some((c) => c.method === "printer.objects.subscribe" && c.params.printer === OCTO_ID),
    ).toBe(true);
    expect(card.getByTestId("selected-badge")).toBeTruthy();
    await fireEvent.click(card.getByTestId("fleet-open"));
    await waitFor(() => expect(location.hash).toBe("#/dashboard"));
  });

  it("removes a remote printer after asking, and the Dashboard falls back to another", async () => {
    const core = fakeCore({ fleet: [SIM, octo()] });
    await renderPrinters(core);
    await core.store.select(OCTO_ID);
    const card = within(screen.getByTestId("printer-octoprint-10-0-0-5-80"));
    await fireEvent.click(card.getByTestId("fleet-remove"));
    expect(core.calls.some((c) => c.method === "printers.remove")).toBe(false);
    await fireEvent.click(card.getByTestId("fleet-remove-yes"));
    await waitFor(() => expect(screen.queryByTestId("printer-octoprint-10-0-0-5-80")).toBeNull());
    expect(core.calls.find((c) => c.method === "printers.remove")?.params).toEqual({ id: OCTO_ID });
    await waitFor(() => expect(core.store.selected).toBe("sim"));
  });
});

describe("Printers page: renaming", () => {
  it("renames a printer in place, and the Dashboard's list shows the new name", async () => {
    const core = fakeCore({ fleet: [SIM, octo()] });
    await renderPrinters(core);
    const card = within(screen.getByTestId("printer-octoprint-10-0-0-5-80"));
    await fireEvent.click(card.getByTestId("fleet-rename"));
    const input = card.getByTestId("fleet-rename-input") as HTMLInputElement;
    expect(input.value).toBe("OctoPrint at 10.0.0.5:80");
    await fireEvent.input(input, { target: { value: "  Farm #3  " } });
    await fireEvent.click(card.getByTestId("fleet-rename-save"));
    await waitFor(() => expect(card.getByTestId("fleet-name").textContent).toBe("Farm #3"));
    expect(core.calls.find((c) => c.method === "printers.rename")?.params).toEqual({ id: OCTO_ID, name: "Farm #3" });
    expect(card.queryByTestId("fleet-rename-form")).toBeNull();
    expect(core.store.fleet.find((p) => p.id === OCTO_ID)?.name).toBe("Farm #3");
  });

  it("keeps the form with core's sentence when the name is refused, and asks for a name before calling core", async () => {
    const core = fakeCore({ fleet: [SIM, octo()] });
    await renderPrinters(core);
    const card = within(screen.getByTestId("printer-sim"));
    await fireEvent.click(card.getByTestId("fleet-rename"));
    const input = card.getByTestId("fleet-rename-input") as HTMLInputElement;
    await fireEvent.input(input, { target: { value: "   " } });
    await fireEvent.click(card.getByTestId("fleet-rename-save"));
    expect(card.getByRole("alert").textContent).toContain("Give the name");
    expect(core.calls.some((c) => c.method === "printers.rename")).toBe(false);
    await fireEvent.input(input, { target: { value: "x".repeat(81) } });
    await fireEvent.click(card.getByTestId("fleet-rename-save"));
    await waitFor(() => expect(card.getByRole("alert").textContent).toContain("at most 80 fit"));
    expect(card.getByTestId("fleet-rename-form")).toBeTruthy();
    expect(card.queryByTestId("fleet-name")).toBeNull();
  });
});

describe("Printers page: adding by address", () => {
  it("says when the printer wants a key, adds it with one, and keeps no credential", async () => {
    const core = fakeCore();
    await renderPrinters(core);
    await fireEvent.input(screen.getByTestId("add-url"), { target: { value: "http://10.0.0.5" } });
    await fireEvent.click(screen.getByTestId("add-submit"));
    const error = await screen.findByTestId("add-error");
    expect(error.textContent).toContain("The printer wants credentials.");
    expect(error.textContent).toContain("needs an API key");
    await waitFor(() => expect(document.activeElement).toBe(screen.getByTestId("add-key")));
    // Only what was typed goes to core: no empty key, no name.
    expect(core.calls.find((c) => c.method === "printers.add")?.params).toEqual({ url: "http://10.0.0.5" });

    await fireEvent.input(screen.getByTestId("add-key"), { target: { value: "WRONG" } });
    await fireEvent.click(screen.getByTestId("add-submit"));
    await waitFor(() => expect(screen.getByTestId("add-error").textContent).toContain("refused the API key"));

    await fireEvent.input(screen.getByTestId("add-key"), { target: { value: "GOODKEY" } });
    await fireEvent.input(screen.getByTestId("add-name"), { target: { value: "Octo" } });
    await fireEvent.click(screen.getByTestId("add-submit"));
    const ok = await screen.findByTestId("add-result");
    expect(ok.textContent).toContain("Added Octo.");
    expect(ok.textContent).toContain("OctoPrint 1.11.8 answered");
    expect(screen.queryByTestId("add-error")).toBeNull();
    await screen.findByTestId("printer-octoprint-10-0-0-5-80");
    // The new printer is the one the Dashboard shows; the key left the form.
    await waitFor(() => expect(core.store.selected).toBe(OCTO_ID));
    expect((screen.getByTestId("add-key") as HTMLInputElement).value).toBe("");
    expect((screen.getByTestId("add-key") as HTMLInputElement).type).toBe("password");
    const keyCalls = core.calls.filter((c) => JSON.stringify(c.params).includes("GOODKEY"));
    expect(keyCalls.map((c) => c.method)).toEqual(["printers.add"]);
    expect(localStorage.length).toBe(0);
    await fireEvent.click(screen.getByTestId("add-open"));
    await waitFor(() => expect(location.hash).toBe("#/dashboard"));
  });

  it("shows core's sentence when nothing answers, and sends a login instead of a key", async () => {
    const core = fakeCore();
    await renderPrinters(core);
    await fireEvent.input(screen.getByTestId("add-url"), { target: { value: "http://nothing.local" } });
    await fireEvent.click(screen.getByTestId("add-submit"));
    const error = await screen.findByTestId("add-error");
    expect(error.textContent).toContain("Could not add the printer.");
    expect(error.textContent).toContain("Nothing answers at http://nothing.local: connection refused");

    await fireEvent.click(screen.getByTestId("add-use-login"));
    await fireEvent.input(screen.getByTestId("add-username"), { target: { value: " maker " } });
    await fireEvent.input(screen.getByTestId("add-password"), { target: { value: "pw with spaces " } });
    await fireEvent.click(screen.getByTestId("add-submit"));
    await waitFor(() => expect(core.calls.filter((c) => c.method === "printers.add")).toHaveLength(2));
    expect(core.calls.filter((c) => c.method === "printers.add")[1]?.params).toEqual({
      url: "http://nothing.local",
      username: "maker",
      password: "pw with spaces ",
    });
  });

  it("asks for an address before calling core", async () => {
    const core = fakeCore();
    await renderPrinters(core);
    await fireEvent.click(screen.getByTestId("add-submit"));
    expect((await screen.findByTestId("add-error")).textContent).toContain("Enter the printer's address");
    expect(core.calls.some((c) => c.method === "printers.add")).toBe(false);
  });
});

describe("Printers page: driving a board with its printer.cfg", () => {
  const CFG = "/home/me/printer_data/config/printer.cfg";
  const CARD = "printer-klipper-home-me-printer_data-config-printer-cfg";

  function boardAdds(core: Core) {
    return core.calls.filter((c) => c.method === "printers.add").map((c) => c.params);
  }

  it("sends the trimmed path without an empty name, is busy while the boards connect, and shows the new printer", async () => {
    const core = fakeCore();
    let connected!: () => void;
    core.boardsConnecting = new Promise<void>((resolve) => (connected = resolve));
    await renderPrinters(core);
    const input = screen.getByTestId("board-config") as HTMLInputElement;
    expect(input.placeholder).toBe("/home/you/printer_data/config/printer.cfg");
    await fireEvent.input(input, { target: { value: `  ${CFG}  ` } });
    await fireEvent.input(screen.getByTestId("board-name"), { target: { value: "   " } });
    await fireEvent.click(screen.getByTestId("board-submit"));

    const submit = screen.getByTestId("board-submit") as HTMLButtonElement;
    await waitFor(() => expect(submit.textContent?.trim()).toBe("Connecting to the board…"));
    expect(submit.disabled).toBe(true);
    expect(input.disabled).toBe(true);
    expect(boardAdds(core)).toEqual([{ config: CFG }]);
    expect(screen.queryByTestId(CARD)).toBeNull();

    connected();
    const ok = await screen.findByTestId("board-result");
    expect(ok.textContent).toContain("Added printer.cfg on /dev/ttyACM0.");
    expect(ok.textContent).toContain("/dev/ttyACM0");
    expect(submit.textContent?.trim()).toBe("Connect and add");
    expect(input.value).toBe("");
    // In the fleet, chosen for the Dashboard, as Gantry's own printer.
    const card = within(await screen.findByTestId(CARD));
    await waitFor(() => expect(core.store.selected).toBe(`klipper:${CFG}`));
    expect(card.getByTestId("selected-badge")).toBeTruthy();
    expect(card.getByText("Gantry host")).toBeTruthy();
    expect(card.getByTestId("fleet-state").textContent).toBe("Klipper: Ready");
    await fireEvent.click(within(ok).getByTestId("board-open"));
    await waitFor(() => expect(location.hash).toBe("#/dashboard"));
  });

  it("sends the name when one is typed", async () => {
    const core = fakeCore();
    await renderPrinters(core);
    await fireEvent.input(screen.getByTestId("board-config"), { target: { value: CFG } });
    await fireEvent.input(screen.getByTestId("board-name"), { target: { value: " Voron 2.4 " } });
    await fireEvent.click(screen.getByTestId("board-submit"));
    expect((await screen.findByTestId("board-result")).textContent).toContain("Added Voron 2.4.");
    expect(boardAdds(core)).toEqual([{ config: CFG, name: "Voron 2.4" }]);
    // Not the address form's call: that one sends a url.
    expect(boardAdds(core).some((p) => "url" in p)).toBe(false);
  });

  it("shows core's sentence for a printer.cfg error and for boards that do not connect, keeping what was typed", async () => {
    const core = fakeCore();
    await renderPrinters(core);
    const input = screen.getByTestId("board-config") as HTMLInputElement;
    await fireEvent.input(input, { target: { value: "/home/me/typo.cfg" } });
    await fireEvent.click(screen.getByTestId("board-submit"));
    let error = await screen.findByTestId("board-error");
    expect(error.textContent).toContain("Could not drive the board.");
    expect(error.textContent).toContain("/home/me/typo.cfg:12: [stepper_x] option 'rotation_distanse' is not valid");
    expect(input.value).toBe("/home/me/typo.cfg");

    await fireEvent.input(input, { target: { value: "printer.cfg" } });
    await fireEvent.click(screen.getByTestId("board-submit"));
    await waitFor(() => expect(screen.getByTestId("board-error").textContent).toContain("give the printer.cfg by its full path, not 'printer.cfg'"));

    await fireEvent.input(input, { target: { value: "/home/me/unplugged/printer.cfg" } });
    await fireEvent.click(screen.getByTestId("board-submit"));
    await waitFor(() => expect(screen.getByTestId("board-error").textContent).toContain("Check that the board is plugged in"));
    error = screen.getByTestId("board-error");
    expect(error.textContent).toContain("Could not start the printer of /home/me/unplugged/printer.cfg: MCU 'mcu'");
    expect(screen.queryByTestId("board-result")).toBeNull();
    expect(core.fleet).toEqual([SIM]);
    expect((screen.getByTestId("board-submit") as HTMLButtonElement).disabled).toBe(false);
  });

  it("asks for the path before calling core", async () => {
    const core = fakeCore();
    await renderPrinters(core);
    await fireEvent.click(screen.getByTestId("board-submit"));
    expect((await screen.findByTestId("board-error")).textContent).toContain("Enter the full path of the board's printer.cfg");
    expect(boardAdds(core)).toEqual([]);
  });

  it("opens the form from a USB board's row with the serial: line its printer.cfg needs", async () => {
    const BY_ID = "/dev/serial/by-id/usb-Klipper_stm32f446xx_3A0028000851363131363530-if00";
    const UART: SerialPrinter = { ...KLIPPER_BOARD, id: "serial:/dev/ttyUSB0", name: "CH340", port: "/dev/ttyUSB0", usb: null, board: null };
    const core = fakeCore({ usb: [{ ...KLIPPER_BOARD, by_id: BY_ID }, UART] });
    await renderPrinters(core);
    expect(screen.queryByTestId("board-hint")).toBeNull();

    const row = within(await screen.findByTestId("printer-serial-dev-ttyACM0"));
    await fireEvent.click(row.getByTestId("usb-drive"));
    const hint = await screen.findByTestId("board-hint");
    expect(hint.textContent).toContain("The board on /dev/ttyACM0 (stm32f446xx)");
    expect(hint.textContent).toMatch(/\[mcu\]\s+serial:\s+should be\s+\/dev\/ttyACM0/);
    expect(hint.textContent).toContain(BY_ID);
    expect(screen.getByTestId("board-serial-line").textContent).toBe(`serial: ${BY_ID}`);
    await waitFor(() => expect(document.activeElement).toBe(screen.getByTestId("board-config")));

    const writeText = vi.fn(async (_text: string) => {});
    Object.defineProperty(navigator, "clipboard", { value: { writeText }, configurable: true });
    await fireEvent.click(screen.getByTestId("board-copy"));
    await waitFor(() => expect(screen.getByTestId("board-copy").textContent?.trim()).toBe("Copied"));
    expect(writeText).toHaveBeenCalledWith(`serial: ${BY_ID}`);

    // A port without a by-id link: the port itself, and where the stable name would be.
    await fireEvent.click(within(screen.getByTestId("printer-serial-dev-ttyUSB0")).getByTestId("usb-drive"));
    await waitFor(() => expect(screen.getByTestId("board-serial-line").textContent).toBe("serial: /dev/ttyUSB0"));
    expect(screen.getByTestId("board-hint").textContent).toContain("(or its /dev/serial/by-id/ link)");
    expect(screen.getByTestId("board-copy").textContent?.trim()).toBe("Copy");

    // Added: the hint has done its job.
    await fireEvent.input(screen.getByTestId("board-config"), { target: { value: CFG } });
    await fireEvent.click(screen.getByTestId("board-submit"));
    await screen.findByTestId("board-result");
    expect(screen.queryByTestId("board-hint")).toBeNull();
  });

  it("removes a board Gantry drives after asking, and never offers to remove the simulated printer", async () => {
    const core = fakeCore({ fleet: [SIM, board(CFG)] });
    await renderPrinters(core);
    expect(within(screen.getByTestId("printer-sim")).queryByTestId("fleet-remove")).toBeNull();
    const card = within(screen.getByTestId(CARD));
    await fireEvent.click(card.getByTestId("fleet-remove"));
    expect(card.getByText(/Close its ports and remove it\?/)).toBeTruthy();
    expect(core.calls.some((c) => c.method === "printers.remove")).toBe(false);
    await fireEvent.click(card.getByTestId("fleet-remove-yes"));
    await waitFor(() => expect(screen.queryByTestId(CARD)).toBeNull());
    expect(core.calls.find((c) => c.method === "printers.remove")?.params).toEqual({ id: `klipper:${CFG}` });
    expect(screen.getByTestId("printer-sim")).toBeTruthy();
  });

  it("stops saying a board was added once it has left the fleet", async () => {
    const core = fakeCore();
    await renderPrinters(core);
    await fireEvent.input(screen.getByTestId("board-config"), { target: { value: CFG } });
    await fireEvent.click(screen.getByTestId("board-submit"));
    await screen.findByTestId("board-result");
    await fireEvent.click(within(await screen.findByTestId(CARD)).getByTestId("fleet-remove"));
    await fireEvent.click(within(screen.getByTestId(CARD)).getByTestId("fleet-remove-yes"));
    await waitFor(() => expect(screen.queryByTestId("board-result")).toBeNull());
  });
});

describe("Printers page: found on the network and on USB", () => {
  it("lists advertised printers with Add, and takes a key through the form when one is needed", async () => {
    const core = fakeCore({
      network: [
        VORON,
        { ...VORON, id: "addr:10.0.0.5:80", kind: "octoprint", name: "OctoPrint instance on octopi", url: "http://10.0.0.5:80/", backend: "octoprint", added: OCTO_ID, version: null },
      ],
    });
    await renderPrinters(core);
    expect((await screen.findByTestId("mdns-state")).textContent).toContain("on every interface");
    const voron = within(screen.getByTestId("found-uuid-6388c43a"));
    expect(voron.getByText("Moonraker")).toBeTruthy();
    expect(voron.getByText("http://10.0.0.9:7125/")).toBeTruthy();
    expect(within(screen.getByTestId("found-addr-10-0-0-5-80")).getByText("Added")).toBeTruthy();

    // Adding it: core says it needs a key; the form takes over with the address filled in.
    await fireEvent.click(voron.getByTestId("found-add"));
    await waitFor(() => expect((screen.getByTestId("add-url") as HTMLInputElement).value).toBe("http://10.0.0.9:7125/"));
    expect(core.calls.find((c) => c.method === "printers.add")?.params).toEqual({ url: "http://10.0.0.9:7125/" });
    expect(screen.getByTestId("add-error").textContent).toContain("needs an API key");

    // A printer stops announcing itself: core says so, the list follows.
    core.network = [];
    core.emit("notify_printers_changed", [{ source: "network", action: "removed", id: VORON.id }]);
    await screen.findByTestId("found-empty");
  });

  it("says when mDNS is off, and lists USB boards with their identity", async () => {
    const core = fakeCore({
      mdns: { state: "off", message: "mDNS discovery is off (GANTRY_MDNS=off)" },
      usb: [KLIPPER_BOARD],
    });
    await renderPrinters(core);
    expect((await screen.findByTestId("mdns-state")).textContent).toContain("GANTRY_MDNS=off");
    const board = within(await screen.findByTestId("printer-serial-dev-ttyACM0"));
    for (const text of ["Klipper (stm32f446xx)", "/dev/ttyACM0", "USB", "1d50:614e", "3A0028000851363131363530", "Klipper firmware (USB)"]) {
      expect(board.getAllByText(text).length).toBeGreaterThan(0);
    }
    // Unplugged: the poll in core notices, the table empties.
    core.usb = [];
    core.emit("notify_printers_changed", [{ source: "usb", action: "changed" }]);
    await screen.findByText("No serial ports found on this computer");
  });

  it("shows why it cannot look for printers", async () => {
    const failing = new Connection(async () => {
      throw new Error("Not running inside Gantry: open the page with ?ws=…&token=…");
    });
    const store = new PrinterStore(failing);
    render(Printers, { store });
    expect((await screen.findByTestId("found-error")).textContent).toContain("Not running inside Gantry");
  });
});

describe("Dashboard: the camera", () => {
  const CAM: Webcam = {
    name: "front",
    service: "mjpegstreamer",
    enabled: true,
    stream_url: "http://10.0.0.5/webcam/?action=stream",
    snapshot_url: "http://10.0.0.5/webcam/?action=snapshot",
    flip_horizontal: true,
    flip_vertical: false,
    rotation: 90,
  };

  it("shows the stream as the server lists it, turned as configured, and says when it does not answer", async () => {
    const core = fakeCore({ fleet: [octo()], webcams: { [OCTO_ID]: [CAM, { ...CAM, name: "off", enabled: false }] } });
    await core.store.refresh();
    render(Dashboard, { store: core.store, source: core.connection });
    const img = (await screen.findByTestId("webcam-image")) as HTMLImageElement;
    expect(img.getAttribute("src")).toBe(CAM.stream_url);
    expect(img.style.transform).toBe("rotate(90deg) scaleX(-1)");
    expect(screen.getAllByTestId("webcam")).toHaveLength(1);
    await fireEvent.error(img);
    const error = await screen.findByTestId("webcam-error");
    expect(error.textContent).toContain(CAM.stream_url);
    await fireEvent.click(within(error).getByText("Try again"));
    await screen.findByTestId("webcam-image");
  });

  it("polls the snapshot of a camera it cannot stream, and shows nothing without a camera", async () => {
    const core = fakeCore({
      fleet: [octo(), SIM],
      webcams: { [OCTO_ID]: [{ ...CAM, service: "webrtc-camerastreamer", flip_horizontal: false, rotation: 0 }] },
    });
    await core.store.refresh();
    render(Dashboard, { store: core.store, source: core.connection });
    const img = (await screen.findByTestId("webcam-image")) as HTMLImageElement;
    expect(img.getAttribute("src")).toBe(`${CAM.snapshot_url}&gantry_t=0`);
    expect(img.style.transform).toBe("none");
    await core.store.select("sim");
    await waitFor(() => expect(screen.queryByTestId("webcams")).toBeNull());
  });

  it("says on the Dashboard when a remote printer's connection is lost, and when it is back", async () => {
    const lost = octo({
      link: { state: "reconnecting", reason: "connection refused", retry_in_ms: 2000 },
      problem: { cause: "Gantry lost the connection: connection refused", advice: "Gantry tries again by itself (next try in 2 s)." },
    });
    const core = fakeCore({ fleet: [lost] });
    await core.store.refresh();
    render(Dashboard, { store: core.store, source: core.connection });
    expect((await screen.findByTestId("link-lost")).textContent).toBe("Connection lost");
    expect(screen.getByText(/Gantry lost the connection: connection refused — Gantry tries again/)).toBeTruthy();
    core.fleet = [octo()];
    core.emit("notify_printers_changed", [{ source: "fleet", action: "link", id: OCTO_ID }]);
    await waitFor(() => expect(screen.queryByTestId("link-lost")).toBeNull());
  });

  it("shows a dash, not zero, for what a printer does not report", async () => {
    const core = fakeCore({ fleet: [octo(), SIM] });
    await core.store.refresh();
    render(Dashboard, { store: core.store, source: core.connection });
    const row = within(await screen.findByTestId("heater-extruder"));
    expect(row.getAllByRole("cell")[2]?.textContent).toBe("—");
    expect(screen.getByTestId("no-position").textContent).toContain("does not report the toolhead's position");
    expect(screen.getByTestId("pos-x").textContent).toBe("—");
    await core.store.select("sim");
    await waitFor(() => expect(screen.getByTestId("pos-x").textContent).toBe("1.00"));
    expect(within(screen.getByTestId("heater-extruder")).getAllByRole("cell")[2]?.textContent).toBe("25 %");
    expect(screen.queryByTestId("no-position")).toBeNull();
  });
});
