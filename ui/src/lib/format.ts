// Display helpers for printer data: USB ids, port types, missing values.
import type {
  BackendKind,
  LinkState,
  PortType,
  Printer,
  SerialPrinter,
  SimulatedPrinter,
  UsbInfo,
  Webcam,
} from "./api";

/** A USB vendor or product id as 4 lower-case hex digits, or null when it is not one. */
export function normalizeUsbId(id: string | null | undefined): string | null {
  if (typeof id !== "string") return null;
  const trimmed = id.trim().replace(/^0x/i, "");
  if (!/^[0-9a-f]{1,4}$/i.test(trimmed)) return null;
  return trimmed.toLowerCase().padStart(4, "0");
}

/** "1d50:614e", or null without USB information or with malformed ids. */
export function formatVidPid(usb: Pick<UsbInfo, "vid" | "pid"> | null | undefined): string | null {
  if (usb == null) return null;
  const vid = normalizeUsbId(usb.vid);
  const pid = normalizeUsbId(usb.pid);
  return vid !== null && pid !== null ? `${vid}:${pid}` : null;
}

const PORT_TYPE_LABELS: Record<PortType, string> = {
  usb: "USB",
  pci: "PCI",
  bluetooth: "Bluetooth",
  unknown: "Unknown",
};

/** Badge text for a port type; anything unexpected reads "Unknown". */
export function portTypeLabel(portType: string | null | undefined): string {
  return Object.hasOwn(PORT_TYPE_LABELS, portType ?? "")
    ? PORT_TYPE_LABELS[portType as PortType]
    : "Unknown";
}

/** Text for a value the device did not report. */
export const NOT_REPORTED = "—";

/** The value, or the "not reported" dash for null, undefined and blank strings. */
export function orDash(value: string | null | undefined): string {
  return value == null || value.trim() === "" ? NOT_REPORTED : value;
}

export interface PrinterGroups {
  simulated: SimulatedPrinter[];
  serial: SerialPrinter[];
  /** Kinds this UI does not know yet (a newer core); shown by name only. */
  other: { id: string; name: string; kind: string }[];
}

/** Splits `printers.list` into the sections the Printers page shows, keeping core's order. */
export function groupPrinters(printers: readonly Printer[]): PrinterGroups {
  const groups: PrinterGroups = { simulated: [], serial: [], other: [] };
  for (const p of printers) {
    if (p.kind === "simulated") groups.simulated.push(p);
    else if (p.kind === "serial") groups.serial.push(p);
    else {
      const unknown = p as { id?: unknown; name?: unknown; kind?: unknown };
      groups.other.push({
        id: String(unknown.id ?? ""),
        name: String(unknown.name ?? unknown.id ?? "Unnamed printer"),
        kind: String(unknown.kind ?? "unknown"),
      });
    }
  }
  return groups;
}

/** A stable, attribute-safe test id for a printer: "printer-sim", "printer-serial-dev-ttyACM0". */
export function printerTestId(id: string): string {
  return `printer-${id.replace(/[^A-Za-z0-9_-]+/g, "-").replace(/^-+|-+$/g, "")}`;
}

/** The product a fleet printer's backend talks to. */
export function backendLabel(kind: BackendKind | string | null | undefined): string {
  switch (kind) {
    case "moonraker":
      return "Moonraker";
    case "octoprint":
      return "OctoPrint";
    case "prusalink":
      return "PrusaLink";
    case "local":
      return "Gantry";
    case "gantry":
      return "Gantry host";
    default:
      return "Unknown";
  }
}

/** A remote printer's link in words: "Connected", "Not connected yet", "Reconnecting…", "Closed" (the
 * next try's time is in the fleet entry's problem, said when the try was planned). */
export function linkLabel(link: LinkState | null | undefined): string | null {
  if (link == null) return null;
  switch (link.state) {
    case "connected":
      return "Connected";
    case "connecting":
      return "Not connected yet";
    case "reconnecting":
      return "Reconnecting…";
    case "closed":
      return "Closed";
  }
}

/** How the Dashboard shows a camera: its MJPEG stream, polled snapshots, or not at all. */
export function webcamMode(w: Pick<Webcam, "service" | "stream_url" | "snapshot_url">): "stream" | "snapshot" | "none" {
  const service = w.service.toLowerCase();
  const mjpeg = service === "mjpegstreamer" || service === "classic" || service === "ipstream" || service === "";
  if (mjpeg && w.stream_url !== "") return "stream";
  if (w.snapshot_url !== null && w.snapshot_url !== "") return "snapshot";
  return "none";
}

/** The CSS transform for a camera's flips and rotation. */
export function webcamTransform(w: Pick<Webcam, "flip_horizontal" | "flip_vertical" | "rotation">): string {
  const parts: string[] = [];
  if (w.rotation % 360 !== 0) parts.push(`rotate(${w.rotation % 360}deg)`);
  if (w.flip_horizontal) parts.push("scaleX(-1)");
  if (w.flip_vertical) parts.push("scaleY(-1)");
  return parts.length === 0 ? "none" : parts.join(" ");
}

/** A snapshot URL made unique per poll, so the webview asks the camera again. */
export function withCacheBuster(url: string, n: number): string {
  return `${url}${url.includes("?") ? "&" : "?"}gantry_t=${n}`;
}
