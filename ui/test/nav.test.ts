// Unit tests of the hash routes and the navigation's keyboard rules.
import { describe, expect, it } from "vitest";
import { PAGES, hashFor, navKeyTarget, pageFromHash, shortcutPage } from "../src/lib/nav";

describe("pageFromHash", () => {
  it("reads each page's route", () => {
    for (const p of PAGES) expect(pageFromHash(hashFor(p.id))).toBe(p.id);
  });
  it("defaults to printers", () => {
    expect(pageFromHash("")).toBe("printers");
    expect(pageFromHash("#")).toBe("printers");
    expect(pageFromHash("#/")).toBe("printers");
    expect(pageFromHash("#/nope")).toBe("printers");
    expect(pageFromHash("#main")).toBe("printers");
  });
  it("tolerates a trailing slash", () => {
    expect(pageFromHash("#/twin/")).toBe("twin");
  });
});

describe("navKeyTarget", () => {
  it("moves and wraps with the arrows", () => {
    expect(navKeyTarget("ArrowDown", 0, 6)).toBe(1);
    expect(navKeyTarget("ArrowDown", 5, 6)).toBe(0);
    expect(navKeyTarget("ArrowUp", 0, 6)).toBe(5);
    expect(navKeyTarget("ArrowUp", 3, 6)).toBe(2);
  });
  it("jumps with Home and End", () => {
    expect(navKeyTarget("Home", 4, 6)).toBe(0);
    expect(navKeyTarget("End", 1, 6)).toBe(5);
  });
  it("ignores other keys", () => {
    expect(navKeyTarget("Enter", 1, 6)).toBeNull();
    expect(navKeyTarget("a", 1, 6)).toBeNull();
  });
});

describe("shortcutPage", () => {
  const key = (
    code: string,
    mods: Partial<Record<"altKey" | "ctrlKey" | "metaKey" | "shiftKey", boolean>> = {},
  ) => ({
    altKey: true,
    ctrlKey: false,
    metaKey: false,
    shiftKey: false,
    code,
    ...mods,
  });
  it("maps Alt+1…Alt+6 to the pages in order", () => {
    expect(shortcutPage(key("Digit1"))).toBe("printers");
    expect(shortcutPage(key("Digit6"))).toBe("settings");
    expect(shortcutPage(key("Numpad5"))).toBe("twin");
  });
  it("ignores other digits and modifiers", () => {
    expect(shortcutPage(key("Digit7"))).toBeNull();
    expect(shortcutPage(key("Digit1", { altKey: false }))).toBeNull();
    expect(shortcutPage(key("Digit1", { ctrlKey: true }))).toBeNull();
    expect(shortcutPage(key("KeyA"))).toBeNull();
  });
});
