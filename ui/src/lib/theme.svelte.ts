// The theme store: the person's choice (persisted), the system preference (live), and the resolved
// theme applied to <html data-theme> so the CSS custom properties in app.css switch.
import {
  loadThemeChoice,
  resolveTheme,
  saveThemeChoice,
  type PreferenceStorage,
  type ResolvedTheme,
  type ThemeChoice,
} from "./theme";

const DARK_QUERY = "(prefers-color-scheme: dark)";

function browserStorage(): PreferenceStorage | null {
  try {
    return typeof localStorage !== "undefined" ? localStorage : null;
  } catch {
    return null;
  }
}

class ThemeStore {
  choice = $state<ThemeChoice>("system");
  systemDark = $state(false);
  resolved: ResolvedTheme = $derived(resolveTheme(this.choice, this.systemDark));

  /** Loads the saved choice, follows the system setting, and keeps <html> in step. */
  init(): void {
    this.choice = loadThemeChoice(browserStorage());
    if (typeof matchMedia === "function") {
      const mq = matchMedia(DARK_QUERY);
      this.systemDark = mq.matches;
      mq.addEventListener("change", (e) => {
        this.systemDark = e.matches;
        this.apply();
      });
    }
    this.apply();
  }

  set(choice: ThemeChoice): void {
    this.choice = choice;
    saveThemeChoice(browserStorage(), choice);
    this.apply();
  }

  private apply(): void {
    if (typeof document === "undefined") return;
    const root = document.documentElement;
    const resolved = resolveTheme(this.choice, this.systemDark);
    root.dataset.theme = resolved;
    root.style.colorScheme = resolved;
  }
}

export const theme = new ThemeStore();
