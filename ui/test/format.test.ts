// Unit tests of the display helpers: VID:PID formatting, port type labels, grouping and test ids.
import { describe, expect, it } from "vitest";
import {
  backendLabel,
  formatVidPid,
  groupPrinters,
  linkLabel,
  webcamMode,
  webcamTransform,
  withCacheBuster,
  normalizeUsbId,
  orDash,
  portTypeLabel,
  printerTestId,
} from "../src/lib/format";
import type { Printer } from "../src/lib/api";
import { heaters, setTemperatureGcode } from "../src/lib/status";

describe("normalizeUsbId", () => {
  it("keeps 4 lower-case hex digits", () => {
    expect(normalizeUsbId("1d50")).toBe("1d50");
  });
  it("lower-cases, pads and strips 0x", () => {
    expect(normalizeUsbId("1D50")).toBe("1d50");
    expect(normalizeUsbId("483")).toBe("0483");
    expect(normalizeUsbId("0x0403")).toBe("0403");
  });
  it("rejects what is not a 16-bit hex id", () => {
    expect(normalizeUsbId("")).toBeNull();
    expect(normalizeUsbId("12345")).toBeNull();
    expect(normalizeUsbId("zz12")).toBeNull();
    expect(normalizeUsbId(null)).toBeNull();
    expect(normalizeUsbId(undefined)).toBeNull();
  });
});

describe("formatVidPid", () => {
  it("joins vendor and product with a colon", () => {
    expect(formatVidPid({ vid: "1d50", pid: "614e" })).toBe("1d50:614e");
    expect(formatVidPid({ vid: "1A86", pid: "7523" })).toBe("1a86:7523");
  });
  it("is null without USB information or with a bad id", () => {
    expect(formatVidPid(null)).toBeNull();
    expect(formatVidPid(undefined)).toBeNull();
    expect(formatVidPid({ vid: "1d50", pid: "nope" })).toBeNull();
  });
});

describe("portTypeLabel", () => {
  it("names each documented port type", () => {
    expect(portTypeLabel("usb")).toBe("USB");
    expect(portTypeLabel("pci")).toBe("PCI");
    expect(portTypeLabel("bluetooth")).toBe("Bluetooth");
    expect(portTypeLabel("unknown")).toBe("Unknown");
  });
  it("reads anything else as Unknown, without prototype lookups", () => {
    expect(portTypeLabel("thunderbolt")).toBe("Unknown");
    expect(portTypeLabel("toString")).toBe("Unknown");
    expect(portTypeLabel(null)).toBe("Unknown");
  });
});

describe("orDash", () => {
  it("shows a dash for missing or blank values", () => {
    expect(orDash(null)).toBe("—");
    expect(orDash(undefined)).toBe("—");
    expect(orDash("  ")).toBe("—");
    expect(orDash("Klipper")).toBe("Klipper");
  });
});

describe("groupPrinters", () => {
  const printers = [
    {
      id: "sim",
      name: "Gantry simulated printer",
      kind: "simulated",
      description: "d",
      config: "c",
    },
    {
      id: "serial:/dev/ttyACM0",
      name: "Klipper (stm32f446xx)",
      kind: "serial",
      port: "/dev/ttyACM0",
      port_type: "usb",
      usb: { vid: "1d50", pid: "614e", manufacturer: "Klipper", product: "x", serial_number: "1" },
      board: "Klipper firmware (USB)",
    },
    { id: "moonraker:farm-1", name: "Farm 1", kind: "moonraker" },
  ] as unknown as Printer[];

  it("splits by kind and keeps unknown kinds by name", () => {
    const g = groupPrinters(printers);
    expect(g.simulated.map((p) => p.id)).toEqual(["sim"]);
    expect(g.serial.map((p) => p.port)).toEqual(["/dev/ttyACM0"]);
    expect(g.other).toEqual([{ id: "moonraker:farm-1", name: "Farm 1", kind: "moonraker" }]);
  });
});

describe("printerTestId", () => {
  it("keeps simple ids and makes port paths attribute-safe", () => {
    expect(printerTestId("sim")).toBe("printer-sim");
    expect(printerTestId("serial:/dev/ttyACM0")).toBe("printer-serial-dev-ttyACM0");
    expect(printerTestId("serial:COM3")).toBe("printer-serial-COM3");
  });
});

describe("remote printers in words", () => {
  it("names backends and links", () => {
    expect(backendLabel("octoprint")).toBe("OctoPrint");
    expect(backendLabel("moonraker")).toBe("Moonraker");
    expect(backendLabel("local")).toBe("Gantry");
    expect(backendLabel("something")).toBe("Unknown");
    expect(linkLabel(null)).toBeNull();
    expect(linkLabel({ state: "connected" })).toBe("Connected");
    expect(linkLabel({ state: "reconnecting", reason: "refused", retry_in_ms: 1500 })).toBe("Reconnecting…");
    expect(linkLabel({ state: "connecting", reason: "refused", retry_in_ms: 2000 })).toBe("Not connected yet");
    expect(linkLabel({ state: "closed", reason: "shut down" })).toBe("Closed");
  });

  it("picks how a camera is shown and turned", () => {
    const cam = { service: "mjpegstreamer", stream_url: "http://h/s", snapshot_url: "http://h/p?x=1" };
    expect(webcamMode(cam)).toBe("stream");
    expect(webcamMode({ ...cam, service: "webrtc-go2rtc" })).toBe("snapshot");
    expect(webcamMode({ ...cam, service: "webrtc-go2rtc", snapshot_url: null })).toBe("none");
    expect(webcamTransform({ flip_horizontal: false, flip_vertical: true, rotation: 180 })).toBe("rotate(180deg) scaleY(-1)");
    expect(webcamTransform({ flip_horizontal: false, flip_vertical: false, rotation: 360 })).toBe("none");
    expect(withCacheBuster("http://h/p?x=1", 3)).toBe("http://h/p?x=1&gantry_t=3");
    expect(withCacheBuster("http://h/p", 3)).toBe("http://h/p?gantry_t=3");
  });
});

describe("heater targets as G-code", () => {
  it("uses M104/M140 where every firmware takes them, Klipper's command elsewhere", () => {
    expect(setTemperatureGcode("extruder", 210)).toBe("M104 S210");
    expect(setTemperatureGcode("extruder1", 200)).toBe("M104 T1 S200");
    expect(setTemperatureGcode("heater_bed", 60)).toBe("M140 S60");
    expect(setTemperatureGcode("heater_generic chamber", 40)).toBe(
      "SET_HEATER_TEMPERATURE HEATER=chamber TARGET=40",
    );
  });
});

describe("heaters", () => {
  it("lists heater objects with a temperature, hotends first, the bed last", () => {
    const list = heaters({
      heater_bed: { temperature: 60.2, target: 60 },
      extruder: { temperature: 25, target: 0, power: 0 },
      toolhead: { position: [0, 0, 0, 0] },
    });
    expect(list.map((h) => [h.name, h.label, h.temperature])).toEqual([
      ["extruder", "Hotend", 25],
      ["heater_bed", "Bed", 60.2],
    ]);
    expect(list.at(1)?.power).toBeNull();
  });

  // Regression: the Dashboard subscribes to `heater_bed` on every printer; one without a bed
  // (or one whose server has not reported yet) answers with an empty object, not a 0 °C heater.
  it("leaves out heater objects the printer has not reported", () => {
    expect(heaters({ extruder: { temperature: 21 }, heater_bed: {} }).map((h) => h.name)).toEqual([
      "extruder",
    ]);
  });
});
