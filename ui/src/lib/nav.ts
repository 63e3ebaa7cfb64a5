// The six pages, hash routes (#/printers …) and the keyboard rules of the navigation (pure).

export const PAGES = [
  { id: "printers", label: "Printers" },
  { id: "dashboard", label: "Dashboard" },
  { id: "console", label: "Console" },
  { id: "files", label: "Files" },
  { id: "twin", label: "Twin" },
  { id: "settings", label: "Settings" },
] as const;

export type PageId = (typeof PAGES)[number]["id"];

export const DEFAULT_PAGE: PageId = "printers";

export function isPageId(value: string): value is PageId {
  return PAGES.some((p) => p.id === value);
}

/** "#/console" → "console"; empty, unknown or malformed hashes → the default page. */
export function pageFromHash(hash: string): PageId {
  const match = /^#\/([a-z]+)\/?(?:[?#].*)?$/.exec(hash.trim());
  const id = match?.[1];
  return id !== undefined && isPageId(id) ? id : DEFAULT_PAGE;
}

export function hashFor(page: PageId): string {
  return `#/${page}`;
}

export function pageLabel(page: PageId): string {
  return PAGES.find((p) => p.id === page)?.label ?? page;
}

/**
 * Where focus goes inside a list of `count` items for a key press, or null when the key is not a
 * navigation key. Arrows wrap around; Home and End jump to the ends.
 */
export function navKeyTarget(key: string, current: number, count: number): number | null {
  if (count <= 0) return null;
  switch (key) {
    case "ArrowDown":
    case "ArrowRight":
      return (current + 1) % count;
    case "ArrowUp":
    case "ArrowLeft":
      return (current - 1 + count) % count;
    case "Home":
      return 0;
    case "End":
      return count - 1;
    default:
      return null;
  }
}

/** The page an Alt+1…Alt+6 shortcut selects, or null. Uses `code` so keyboard layouts don't matter. */
export function shortcutPage(e: {
  altKey: boolean;
  ctrlKey: boolean;
  metaKey: boolean;
  shiftKey: boolean;
  code: string;
}): PageId | null {
  if (!e.altKey || e.ctrlKey || e.metaKey || e.shiftKey) return null;
  const match = /^(?:Digit|Numpad)([1-9])$/.exec(e.code);
  if (match === null) return null;
  return PAGES[Number(match[1]) - 1]?.id ?? null;
}
