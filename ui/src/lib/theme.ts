// Theme choice and resolution (pure): "system" follows prefers-color-scheme, "light"/"dark" force one.
// The choice is a UI preference kept in localStorage under THEME_STORAGE_KEY.

export type ThemeChoice = "system" | "light" | "dark";
export type ResolvedTheme = "light" | "dark";

export const THEME_CHOICES: readonly ThemeChoice[] = ["system", "light", "dark"];
export const THEME_STORAGE_KEY = "gantry.theme";

/** Reads a stored choice; anything unknown or missing means "system". */
export function parseThemeChoice(stored: string | null | undefined): ThemeChoice {
  return stored === "light" || stored === "dark" || stored === "system" ? stored : "system";
}

/** The theme actually shown for a choice, given whether the system prefers dark. */
export function resolveTheme(choice: ThemeChoice, systemPrefersDark: boolean): ResolvedTheme {
  if (choice === "system") return systemPrefersDark ? "dark" : "light";
  return choice;
}

/** Minimal storage interface (localStorage, or a fake in tests); failures are ignored. */
export interface PreferenceStorage {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
}

export function loadThemeChoice(storage: PreferenceStorage | null): ThemeChoice {
  try {
    return parseThemeChoice(storage?.getItem(THEME_STORAGE_KEY));
  } catch {
    return "system";
  }
}

export function saveThemeChoice(storage: PreferenceStorage | null, choice: ThemeChoice): void {
  try {
    storage?.setItem(THEME_STORAGE_KEY, choice);
  } catch {
    // Storage can be disabled or full; the choice then lasts for this session only.
  }
}
