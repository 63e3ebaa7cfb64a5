// Component tests of the app shell (jsdom): navigation semantics, hash routing, Alt+1…Alt+6, arrow
// keys, the skip link, and the connection indicator when no endpoint is given.
import { beforeEach, describe, expect, it } from "vitest";
import { fireEvent, render, screen, waitFor } from "@testing-library/svelte";
import App from "../src/App.svelte";
import { PAGES } from "../src/lib/nav";

beforeEach(() => {
  history.replaceState(null, "", "/");
});

describe("App shell", () => {
  it("starts on Printers with one current nav link per page", async () => {
    render(App);
    const nav = screen.getByRole("navigation", { name: "Main" });
    const links = nav.querySelectorAll("a");
    expect([...links].map((a) => a.textContent?.replace(/\d/g, "").trim())).toEqual(
      PAGES.map((p) => p.label),
    );
    expect(screen.getByTestId("nav-printers").getAttribute("aria-current")).toBe("page");
    expect(screen.getByTestId("nav-console").hasAttribute("aria-current")).toBe(false);
    expect(location.hash).toBe("#/printers");
    expect(screen.getByTestId("page-printers")).toBeTruthy();
  });

  it("follows the hash", async () => {
    render(App);
    location.hash = "#/console";
    window.dispatchEvent(new HashChangeEvent("hashchange"));
    await screen.findByTestId("page-console");
    expect(screen.getByTestId("nav-console").getAttribute("aria-current")).toBe("page");
  });

  it("switches pages with Alt+digit and focuses the page heading", async () => {
    render(App);
    await fireEvent.keyDown(window, { key: "5", code: "Digit5", altKey: true });
    const heading = await screen.findByTestId("page-twin");
    expect(location.hash).toBe("#/twin");
    await waitFor(() => expect(document.activeElement).toBe(heading));
    await fireEvent.keyDown(window, { key: "6", code: "Digit6", altKey: true });
    await screen.findByTestId("page-settings");
  });

  it("moves focus through the nav with the arrow keys", async () => {
    render(App);
    const first = screen.getByTestId("nav-printers");
    first.focus();
    await fireEvent.keyDown(first, { key: "ArrowDown" });
    expect(document.activeElement).toBe(screen.getByTestId("nav-dashboard"));
    await fireEvent.keyDown(document.activeElement!, { key: "End" });
    expect(document.activeElement).toBe(screen.getByTestId("nav-settings"));
    await fireEvent.keyDown(document.activeElement!, { key: "ArrowDown" });
    expect(document.activeElement).toBe(first);
    await fireEvent.keyDown(first, { key: "ArrowUp" });
    expect(document.activeElement).toBe(screen.getByTestId("nav-settings"));
  });

  it("has a skip link to the main content", async () => {
    render(App);
    const skip = screen.getByRole("link", { name: "Skip to main content" });
    await fireEvent.click(skip);
    await waitFor(() => expect(document.activeElement).toBe(screen.getByTestId("page-printers")));
    expect(location.hash).toBe("#/printers");
  });

  it("reports that it is not running inside Gantry", async () => {
    render(App);
    const status = screen.getByTestId("api-status");
    await waitFor(() => expect(status.getAttribute("data-status")).toBe("failed"));
    expect(status.textContent).toContain("Not running inside Gantry");
    expect(screen.getByRole("button", { name: "Retry connecting to core" })).toBeTruthy();
  });
});
