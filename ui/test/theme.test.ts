// Unit tests of theme resolution and the remembered choice.
import { describe, expect, it } from "vitest";
import {
  loadThemeChoice,
  parseThemeChoice,
  resolveTheme,
  saveThemeChoice,
  THEME_STORAGE_KEY,
  type PreferenceStorage,
} from "../src/lib/theme";

function memoryStorage(initial: Record<string, string> = {}): PreferenceStorage & {
  data: Record<string, string>;
} {
  const data = { ...initial };
  return {
    data,
    getItem: (k) => (k in data ? data[k]! : null),
    setItem: (k, v) => {
      data[k] = v;
    },
  };
}

describe("resolveTheme", () => {
  it("follows the system for 'system'", () => {
    expect(resolveTheme("system", true)).toBe("dark");
    expect(resolveTheme("system", false)).toBe("light");
  });
  it("ignores the system for an explicit choice", () => {
    expect(resolveTheme("light", true)).toBe("light");
    expect(resolveTheme("dark", false)).toBe("dark");
  });
});

describe("parseThemeChoice", () => {
  it("accepts the three choices and defaults to system", () => {
    expect(parseThemeChoice("light")).toBe("light");
    expect(parseThemeChoice("dark")).toBe("dark");
    expect(parseThemeChoice("system")).toBe("system");
    expect(parseThemeChoice(null)).toBe("system");
    expect(parseThemeChoice("DARK")).toBe("system");
    expect(parseThemeChoice("")).toBe("system");
  });
});

describe("stored choice", () => {
  it("round-trips through storage", () => {
    const s = memoryStorage();
    expect(loadThemeChoice(s)).toBe("system");
    saveThemeChoice(s, "dark");
    expect(s.data[THEME_STORAGE_KEY]).toBe("dark");
    expect(loadThemeChoice(s)).toBe("dark");
  });
  it("survives storage that throws or is missing", () => {
    const broken: PreferenceStorage = {
      getItem: () => {
        throw new Error("denied");
      },
      setItem: () => {
        throw new Error("full");
      },
    };
    expect(loadThemeChoice(broken)).toBe("system");
    expect(() => saveThemeChoice(broken, "light")).not.toThrow();
    expect(loadThemeChoice(null)).toBe("system");
  });
});
