// Klipper status objects on the UI side (pure): merging Moonraker-style deltas, reading the fields
// the pages show, and the small series the temperature chart draws.
import type { StatusObjects } from "./api";

/** Applies a `notify_status_update` delta: each object's listed fields replace the stored ones. */
export function mergeStatus(status: StatusObjects, delta: StatusObjects): StatusObjects {
  const next: StatusObjects = { ...status };
  for (const [name, fields] of Object.entries(delta)) {
    if (fields === null || typeof fields !== "object") continue;
    next[name] = { ...(status[name] ?? {}), ...fields };
  }
  return next;
}

export function num(status: StatusObjects, object: string, field: string): number | null {
  const v = status[object]?.[field];
  return typeof v === "number" && Number.isFinite(v) ? v : null;
}

export function str(status: StatusObjects, object: string, field: string): string | null {
  const v = status[object]?.[field];
  return typeof v === "string" ? v : null;
}

export function list(status: StatusObjects, object: string, field: string): number[] | null {
  const v = status[object]?.[field];
  return Array.isArray(v) && v.every((x) => typeof x === "number") ? (v as number[]) : null;
}

/** A heater as the dashboard shows it. */
export interface Heater {
  name: string;
  label: string;
  temperature: number;
  target: number;
  /** Heater power 0…1; null when the printer does not report it (OctoPrint). */
  power: number | null;
}

/** Klipper's heater objects (`extruder`, `extruder1`, `heater_bed`, `heater_generic …`). */
export function isHeaterObject(name: string): boolean {
  return /^extruder\d*$/.test(name) || name === "heater_bed" || name.startsWith("heater_generic ");
}

export function heaterLabel(name: string): string {
  if (name === "extruder") return "Hotend";
  if (/^extruder\d+$/.test(name)) return `Hotend ${name.slice(8)}`;
  if (name === "heater_bed") return "Bed";
  return name.replace(/^heater_generic /, "");
}

/** The heaters the printer reports: heater objects with a temperature (an object subscribed to
 * before the printer reported it is empty). */
export function heaters(status: StatusObjects): Heater[] {
  return Object.keys(status)
    .filter((name) => isHeaterObject(name) && num(status, name, "temperature") !== null)
    .sort((a, b) => (a === "heater_bed" ? 1 : b === "heater_bed" ? -1 : a.localeCompare(b)))
    .map((name) => ({
      name,
      label: heaterLabel(name),
      temperature: num(status, name, "temperature") ?? 0,
      target: num(status, name, "target") ?? 0,
      power: num(status, name, "power"),
    }));
}

/**
 * The G-code that sets a heater's target. Hotends and the bed get M104/M140, which Klipper,
 * Marlin (OctoPrint) and Prusa firmware all take (`M104 T1` for `extruder1`); other heaters exist
 * only on Klipper, whose SET_HEATER_TEMPERATURE they get.
 */
export function setTemperatureGcode(heater: string, target: number): string {
  if (heater === "extruder") return `M104 S${target}`;
  const tool = /^extruder(\d+)$/.exec(heater);
  if (tool) return `M104 T${tool[1]} S${target}`;
  if (heater === "heater_bed") return `M140 S${target}`;
  return `SET_HEATER_TEMPERATURE HEATER=${heater.replace(/^heater_generic /, "")} TARGET=${target}`;
}

/** What the job is doing, in words. */
export function jobStateLabel(state: string | null): string {
  switch (state) {
    case "printing":
      return "Printing";
    case "paused":
      return "Paused";
    case "complete":
      return "Complete";
    case "cancelled":
      return "Cancelled";
    case "error":
      return "Error";
    case "standby":
      return "Idle";
    default:
      return "Unknown";
  }
}

/** Seconds → `1:02:03` or `2:03`. */
export function clockTime(seconds: number | null): string {
  if (seconds === null || !Number.isFinite(seconds) || seconds < 0) return "—";
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  const mm = h > 0 ? String(m).padStart(2, "0") : String(m);
  return h > 0 ? `${h}:${mm}:${String(sec).padStart(2, "0")}` : `${mm}:${String(sec).padStart(2, "0")}`;
}

/** Time left as Mainsail estimates it from the file position: print time scaled by progress. */
export function remainingSeconds(printDuration: number | null, progress: number | null): number | null {
  if (printDuration === null || progress === null || progress <= 0 || printDuration <= 0) return null;
  return Math.max(0, printDuration / progress - printDuration);
}

/** A fixed-size series of samples (the chart keeps 20 minutes at 1 Hz). */
export function pushSample(series: number[], value: number, max = 1200): number[] {
  const next = series.length >= max ? series.slice(series.length - max + 1) : series.slice();
  next.push(value);
  return next;
}

/** An SVG polyline's points for `values` in a `width` × `height` box over [lo, hi]. */
export function polylinePoints(
  values: number[],
  width: number,
  height: number,
  lo: number,
  hi: number,
  capacity: number,
): string {
  if (values.length === 0 || hi <= lo) return "";
  const step = capacity > 1 ? width / (capacity - 1) : width;
  const offset = capacity - values.length;
  return values
    .map((v, i) => {
      const x = (offset + i) * step;
      const y = height - ((Math.min(hi, Math.max(lo, v)) - lo) / (hi - lo)) * height;
      return `${x.toFixed(1)},${y.toFixed(1)}`;
    })
    .join(" ");
}

/** Klippy's state (`webhooks.state`) in words. */
export function klippyStateLabel(state: string | null | undefined): string {
  switch (state) {
    case "ready":
      return "Ready";
    case "shutdown":
      return "Shut down";
    case "error":
      return "Error";
    case "startup":
      return "Starting";
    case "disconnected":
      return "Disconnected";
    default:
      return "Unknown";
  }
}
